"""Reading results folders: tables, ranking, export and report. Imports no torch, timm or ray."""
