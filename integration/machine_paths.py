"""Scrub the paths that only describe the machine that ran out of text meant for readers: the repository and
report roots (a path is shown relative to them), site-packages prefixes (a warning keeps its package-relative
path) and home folders."""
import re

_SITE_PACKAGES = re.compile(r"(?:/[^\s/\"'<>:]+)+/(?:site|dist)-packages/")
_HOME = re.compile(r"(?<![\w.-])/(?:root|home/[^\s/\"'<>]+)/")


def scrub_paths(text, roots):
    """text without machine paths; roots: the directories that paths are shown relative to."""
    for root in sorted({str(r) for r in roots}, key=len, reverse=True):
        text = text.replace(root + "/", "")
    return _HOME.sub("~/", _SITE_PACKAGES.sub("", text))
