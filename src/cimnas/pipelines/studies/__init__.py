"""Study drivers: scripted series of pipeline runs (they train models, so they are pipelines, not reports)."""
