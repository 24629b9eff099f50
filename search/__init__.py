"""The search engine and the `optsearch` command line.

    from search import Search
    result = Search("quickstart", max_evals=50).fit()

(Search and Result are search/api.py's, imported on first use so that the
command line starts without loading the engine.)
"""


def __getattr__(name: str):
    if name in ("Search", "Result"):
        from search import api

        return getattr(api, name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
