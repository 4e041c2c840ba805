"""Cloudify operations of the vimigrate plugin.

Each operation is thin: it reads its context, calls the native engine, stores what came back as
runtime properties and maps engine errors to Cloudify's (see ``_support.map_errors``).
"""
