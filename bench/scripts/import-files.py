#!/usr/bin/env python3
"""Writes N links in each import format, for measuring
`shortline-control import --format F` (docs/import.md, Rates).

Every format holds the same links: 7-character codes and 75-byte targets,
with a title, two tags, a creation time and a visit count where the format
has them. Usage: import-files.py N DIR; then, for each file,
`shortline-control import --data-dir FRESH_DIR --format F [--domain D] FILE`.
"""
import json
import random
import sys

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def links(n):
    rng = random.Random(7)
    seen = set()
    while len(seen) < n:
        code = "".join(rng.choice(ALPHABET) for _ in range(7))
        if code in seen:
            continue
        seen.add(code)
        target = f"https://www.example.com/articles/{len(seen):012d}/" + "x" * 28
        yield code, target[:75], len(seen) % 1000


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    with open(f"{out}/links.csv", "w") as f:
        f.write("url,code,title,tags,created_at,visits\n")
        for code, target, visits in links(n):
            f.write(f"{target},{code},Article,news|tech,2020-01-02T03:04:05Z,{visits}\n")
    with open(f"{out}/yourls.csv", "w") as f:
        f.write("keyword,url,title,timestamp,ip,clicks\n")
        for code, target, visits in links(n):
            f.write(f"{code},{target},Article,2020-01-02 03:04:05,127.0.0.1,{visits}\n")
    with open(f"{out}/shlink.json", "w") as f:
        # Pages of 1,000, one after another, as saved page by page.
        page = []
        for code, target, visits in links(n):
            page.append({
                "shortCode": code, "shortUrl": f"https://s.example/{code}",
                "longUrl": target, "dateCreated": "2020-01-02T03:04:05+00:00",
                "visitsSummary": {"total": visits, "nonBots": visits, "bots": 0},
                "tags": ["news", "tech"], "meta": {"validSince": None, "validUntil": None, "maxVisits": None},
                "domain": None, "title": "Article", "crawlable": False, "forwardQuery": True,
            })
            if len(page) == 1000:
                f.write(json.dumps({"shortUrls": {"data": page}}) + "\n")
                page = []
        if page:
            f.write(json.dumps({"shortUrls": {"data": page}}) + "\n")
    with open(f"{out}/kutt.json", "w") as f:
        data = [{
            "address": code, "target": target, "description": "Article",
            "created_at": "2020-01-02T03:04:05.000Z", "expire_in": None,
            "visit_count": visits, "domain": None, "banned": False, "password": False,
            "link": f"https://k.example/{code}",
        } for code, target, visits in links(n)]
        json.dump({"limit": n, "skip": 0, "total": n, "data": data}, f)


if __name__ == "__main__":
    main()
