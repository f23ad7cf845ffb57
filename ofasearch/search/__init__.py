"""The search: space, plan, searcher, trials, progress and ``ofasearch run/resume/status``."""
