"""Distribution shifts of prompts, registered per task family (issue 20)."""
