"""relink.object tests: helpers live in objsupport.py (fixtures/*.c built at test time)."""
