"""Protection of what gatehook keeps: tenants' secrets sealed at rest (``sealing``), and the
connection options that carry TLS and credentials to NATS and MongoDB (``connections``)."""
