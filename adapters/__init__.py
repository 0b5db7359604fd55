"""I/O edges of Mailers: warehouses, providers, files. The core never imports these."""
