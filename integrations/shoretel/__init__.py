"""ShoreTel through its TAPI bridge (docs/tapi-bridge.md).

`protocol`, `client` and `simulator` are pure: JSON and HTTP in, observations
(`integrations.observations`) out, no Django and no database. The rest of the package is
the Django app `integrations.shoretel` that polls the bridges, applies what they report
to the directory and ties ShoreTel calls to the unsignalled recordings of their phones.
"""
