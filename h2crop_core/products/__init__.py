"""Satellite products as delivered: Sentinel-2 L2A scenes, EnMAP L2A products, and the input contract."""
