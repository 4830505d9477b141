#!/usr/bin/python3
"""Opens an uvstall-report page in headless Chromium and saves a PNG of it:
how docs/report-screenshot.png is made.

  screenshot.py PAGE.html OUT.png [--width 1400] [--height 1150]

--height 0 takes the whole page.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("page")
    p.add_argument("out")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=1150)
    args = p.parse_args()
    browser = cdp.Browser(width=args.width, height=max(args.height, 800))
    try:
        browser.open("file://" + os.path.abspath(args.page))
        browser.wait_for("document.body.dataset.ready === '1'")
        browser.screenshot(args.out, full_page=args.height == 0,
                           clip_height=args.height or None)
        errors = browser.page_errors()
    finally:
        browser.close()
    if errors:
        sys.exit("screenshot.py: the page reported errors: %s" % "; ".join(errors))


if __name__ == "__main__":
    main()
