"""Platform integrations, one package per platform: the only code that knows platform field names."""
