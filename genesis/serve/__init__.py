"""The colony as a service: an HTTP API and a web page (`genesis colony serve`)."""
