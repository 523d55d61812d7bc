"""Route tables, one module per surface; each exposes `routes = web.RouteTableDef()`."""
