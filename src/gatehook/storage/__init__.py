"""Storage adapters; MongoDB (PyMongo async) is the one real one."""

from gatehook.storage.mongo import MongoStore, Pin

__all__ = ["MongoStore", "Pin"]
