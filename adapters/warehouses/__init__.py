"""Warehouse adapters, one module per engine, each implementing ``mailers.warehouse.Warehouse``."""
