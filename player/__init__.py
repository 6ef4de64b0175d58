"""Web pages and their static assets, served by `server`."""
