"""The report viewer's page: report_page.html with report_page.css,
report_page.js and the data inlined, so the file needs nothing else to be
viewed -- no network, no other file.
"""

import html
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = "report_page.html"
STYLE = "report_page.css"
SCRIPT = "report_page.js"


def _asset(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def data_json(data):
    """JSON that is safe inside <script type="application/json">: "</" could
    end the element and "<!--" confuse the parser, so every "<" (which JSON
    has only inside strings) is written as the escape \\u003c."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=str)
    return text.replace("<", "\\u003c")


def render(data):
    template = _asset(TEMPLATE)
    if template.count("@DATA@") != 1:
        raise RuntimeError("%s: placeholder @DATA@ must appear once" % TEMPLATE)
    head, tail = template.split("@DATA@")
    # Each placeholder is replaced in the template alone, before the data
    # goes in: text from reports can never be read as a placeholder.
    parts = {
        "/*@STYLE@*/": _asset(STYLE),
        "/*@SCRIPT@*/": _asset(SCRIPT).replace("</", "<\\/"),
        "@TITLE@": html.escape("uvstall report: " + str(data["meta"].get("title") or "")),
    }
    for key, value in parts.items():
        if (head + tail).count(key) != 1:
            raise RuntimeError("%s: placeholder %s must appear once" % (TEMPLATE, key))
        head, tail = head.replace(key, value), tail.replace(key, value)
    return head + data_json(data) + tail
