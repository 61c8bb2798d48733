"""The Hub API's answers for the repos a mirror serves: model info and listings (``/api/models`` with the Hub's
``search``, ``author``, ``filter``, ``sort``, ``direction``, ``limit``, ``full``, ``config`` and ``expand``), refs,
trees and paths-info, and the HTML index and model pages a browser sees.

Values are built here as the Hub spells them (checked against huggingface_hub 2.x's parsers); the handler in
``mirror`` only routes and sends them. Every repo has one branch, ``main``, and no tags. Download and like counts
are 0; ``createdAt`` and ``lastModified`` are the oldest and newest file modification times.
"""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from zoo.fetch.hubrepos import Catalog, FileInfo

SORT_KEYS = {"id": "id", "modelId": "id", "lastModified": "lastModified", "last_modified": "lastModified",
             "createdAt": "createdAt", "created_at": "createdAt", "downloads": "downloads", "likes": "likes",
             "trendingScore": "trendingScore", "trending_score": "trendingScore"}
PIPELINE_TAGS = {"ForQuestionAnswering": "question-answering", "ForSequenceClassification": "text-classification",
                 "ForTokenClassification": "token-classification", "ForMaskedLM": "fill-mask"}
FORMAT_TAGS = {".bin": "pytorch", ".safetensors": "safetensors", ".onnx": "onnx"}
COMMIT_TITLE = "zoo mirror snapshot"


class BadQuery(ValueError):
    """A query parameter the Hub would refuse too (answered 400)."""


@dataclass(frozen=True)
class Repo:
    """One served repo as the API describes it."""

    id: str
    dir: Path
    files: list[FileInfo]
    sha: str

    @property
    def author(self) -> str | None:
        return self.id.split("/")[0] if "/" in self.id else None

    @property
    def created(self) -> str:
        return _iso(min((f.mtime for f in self.files), default=0.0))

    @property
    def modified(self) -> str:
        return _iso(max((f.mtime for f in self.files), default=0.0))

    def config(self) -> dict[str, Any]:
        try:
            value = json.loads((self.dir / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}


def repo(catalog: Catalog, repo_id: str, repo_dir: Path) -> Repo:
    return Repo(repo_id, repo_dir, catalog.files(repo_dir), catalog.commit(repo_dir))


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _pipeline_tag(config: dict[str, Any]) -> str | None:
    for arch in config.get("architectures") or []:
        for suffix, tag in PIPELINE_TAGS.items():
            if isinstance(arch, str) and arch.endswith(suffix):
                return tag
    return None


def _tags(r: Repo, config: dict[str, Any]) -> list[str]:
    tags = {tag for f in r.files for suffix, tag in FORMAT_TAGS.items() if f.path.endswith(suffix)}
    if isinstance(config.get("model_type"), str):
        tags.add(config["model_type"])
    if (task := _pipeline_tag(config)) is not None:
        tags.add(task)
    return sorted(tags)


def siblings(files: list[FileInfo]) -> list[dict[str, Any]]:
    return [{"rfilename": f.path, "size": f.size, "blobId": f.git_oid,
             **({"lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}} if f.lfs else {})} for f in files]


def model_info(r: Repo, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """``/api/models/<repo>``: everything the Hub's model info carries that a mirror knows."""
    config = r.config() if config is None else config
    return {"_id": r.sha[:24], "id": r.id, "modelId": r.id, "author": r.author, "sha": r.sha, "private": False,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "trendingScore": 0,
            "tags": _tags(r, config), "pipeline_tag": _pipeline_tag(config), "library_name": "transformers",
            "createdAt": r.created, "lastModified": r.modified, "siblings": siblings(r.files),
            "config": {k: config[k] for k in ("architectures", "model_type") if k in config}}


LISTED = ("_id", "id", "modelId", "likes", "trendingScore", "downloads", "private", "tags", "pipeline_tag",
          "library_name", "createdAt")


def listing(catalog: Catalog, query: dict[str, list[str]]) -> list[dict[str, Any]]:
    """``GET /api/models``: the served repos filtered, sorted and cut as the Hub does for the same parameters."""

    def one(key: str) -> str | None:
        values = query.get(key)
        return values[-1] if values else None

    search, author = (one("search") or "").lower(), (one("author") or "").lower()
    wanted_tags = query.get("filter", []) + query.get("pipeline_tag", [])
    entries = []
    for repo_id in catalog.repos():
        if search not in repo_id.lower() or author and ("/" not in repo_id or repo_id.split("/")[0].lower() != author):
            continue
        r = repo(catalog, repo_id, catalog.repo_dir(repo_id))  # type: ignore[arg-type]
        info = model_info(r)
        if all(t in info["tags"] for t in wanted_tags):
            entries.append(info)
    entries.sort(key=lambda e: e["id"])
    sort = one("sort")
    if sort is not None:
        if sort not in SORT_KEYS:
            raise BadQuery(f"sort must be one of {', '.join(sorted(set(SORT_KEYS.values())))}")
        direction = one("direction") or "-1"
        if direction not in ("-1", "1"):
            raise BadQuery("direction must be -1 or 1")
        entries.sort(key=lambda e: e[SORT_KEYS[sort]], reverse=direction == "-1")
    limit = one("limit")
    if limit is not None:
        if not limit.isascii() or not limit.isdigit():
            raise BadQuery("limit must be a non-negative integer")
        entries = entries[:int(limit)]
    return [_shaped(e, query) for e in entries]


def _shaped(info: dict[str, Any], query: dict[str, list[str]]) -> dict[str, Any]:
    """An entry with the fields the Hub lists by default, or all of them (``full``), or ``expand``'s and the id."""
    expand = query.get("expand", []) + query.get("expand[]", [])
    if expand:
        return {k: v for k, v in info.items() if k in expand or k in ("_id", "id")}
    truthy = {"1", "true", "True"}
    keys = set(LISTED)
    if (query.get("full") or [""])[-1] in truthy:
        keys |= {"author", "sha", "lastModified", "disabled", "gated", "siblings"}
    if (query.get("config") or [""])[-1] in truthy:
        keys.add("config")
    return {k: v for k, v in info.items() if k in keys}


def refs(r: Repo) -> dict[str, Any]:
    """``/api/models/<repo>/refs``: one branch, ``main``."""
    return {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": r.sha}], "tags": [],
            "converts": [], "pullRequests": []}


def _file_entry(f: FileInfo, last_commit: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": "file", "path": f.path, "size": f.size, "oid": f.git_oid,
            **({"lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134}} if f.lfs else {}),
            **({"lastCommit": last_commit} if last_commit else {})}


def _folder_entry(path: str, files: list[FileInfo], last_commit: dict[str, Any] | None) -> dict[str, Any]:
    inside = "".join(f"{f.path}\0{f.git_oid}\n" for f in files if f.path.startswith(path + "/"))
    oid = hashlib.sha1(inside.encode(), usedforsecurity=False).hexdigest()
    return {"type": "directory", "path": path, "oid": oid, **({"lastCommit": last_commit} if last_commit else {})}


def _last_commit(r: Repo, expand: bool) -> dict[str, Any] | None:
    return {"id": r.sha, "title": COMMIT_TITLE, "date": r.modified} if expand else None


def _folders(files: list[FileInfo]) -> set[str]:
    return {"/".join(f.path.split("/")[:i]) for f in files for i in range(1, f.path.count("/") + 1)}


def tree(r: Repo, prefix: str, recursive: bool, expand: bool = False) -> list[dict[str, Any]]:
    """``/api/models/<repo>/tree/<rev>/<prefix>``: folders first then files, as the Hub lists them; the direct
    children only unless ``recursive``. Empty when ``prefix`` names no visible folder (a hidden one included)."""
    prefix = prefix.strip("/")
    folders = _folders(r.files)
    base = f"{prefix}/" if prefix else ""
    depth = base.count("/")

    def shown(path: str) -> bool:
        return path.startswith(base) and (recursive or path.count("/") == depth)

    commit = _last_commit(r, expand)
    return ([_folder_entry(d, r.files, commit) for d in sorted(folders) if shown(d)]
            + [_file_entry(f, commit) for f in r.files if shown(f.path)])


def paths_info(r: Repo, paths: list[str], expand: bool = False) -> list[dict[str, Any]]:
    """``POST /api/models/<repo>/paths-info/<rev>``: the entries among ``paths``; others (missing, hidden) are left out."""
    by_path = {f.path: f for f in r.files}
    folders = _folders(r.files)
    commit = _last_commit(r, expand)
    out = []
    for path in dict.fromkeys(p.strip("/") for p in paths):
        if path in by_path:
            out.append(_file_entry(by_path[path], commit))
        elif path in folders:
            out.append(_folder_entry(path, r.files, commit))
    return out


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 12px;text-align:left}}td.n{{text-align:right}}</style>
</head><body><h1>{title}</h1>
{body}
</body></html>
"""


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return ""


def index_page(catalog: Catalog) -> str:
    """``GET /``: the served repos, each a link to its page."""
    rows = "".join(f'<li><a href="/{quote(r)}">{html.escape(r)}</a></li>\n' for r in catalog.repos())
    body = (f"<p>{len(catalog.repos())} repos served by <code>zoo mirror serve</code>. Point "
            f"<code>HF_ENDPOINT</code> here to use them with huggingface_hub.</p>\n<ul>\n{rows}</ul>")
    return _PAGE.format(title="zoo mirror", body=body)


def model_page(r: Repo) -> str:
    """``GET /<repo>``: the repo's files with sizes and hashes, each a download link."""
    rows = "".join(
        f'<tr><td><a href="/{quote(r.id)}/resolve/main/{quote(f.path)}">{html.escape(f.path)}</a></td>'
        f'<td class="n">{_size(f.size)}</td><td><code>{f.sha256}</code></td></tr>\n' for f in r.files)
    body = (f"<p>revision <code>main</code> = commit <code>{r.sha}</code>, updated {r.modified}. "
            f'JSON: <a href="/api/models/{quote(r.id)}">/api/models/{html.escape(r.id)}</a></p>\n'
            f"<table><tr><th>file</th><th>size</th><th>sha256</th></tr>\n{rows}</table>")
    return _PAGE.format(title=html.escape(r.id), body=body)
