"""A stand-in for ComfyUI's ``comfy_api`` package, put on ``sys.path`` by ``tests/conftest.py`` (and
``scripts/pack_import.py``) when ComfyUI's own is not importable, so the pack's V3 nodes import and run in tests.

It implements what the pack uses of ``comfy_api.latest`` the way ComfyUI 0.3.64 does (the V1 view a node's schema
gives: ``INPUT_TYPES``, ``RETURN_TYPES``...; the class clone with its hidden values; ``NodeOutput``), and nothing
more. ``tests/test_comfyui_v3.py`` checks that every node describes itself the same way under this stand-in and
under a real ComfyUI's ``comfy_api``.
"""
