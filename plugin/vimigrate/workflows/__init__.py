"""Cloudify workflows of the vimigrate plugin (``migrate``)."""
