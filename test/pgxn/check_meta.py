#!/usr/bin/env python3
"""Validates META.json against the PGXN Meta Spec 1.0.0 (https://pgxn.org/spec/)
and checks that the release versions agree:

    META.json version == provides.flint_keys.version
                      == flint_keys.control default_version (1.1 as 1.1.0)
    debian/changelog's upstream version == default_version

and what a release of flint_keys needs beyond the spec:

    provides.flint_keys.file is flint_keys--<default_version>.sql, the full
      install script (pgxn load treats a provides file that is not .sql as
      "not a PostgreSQL extension": it prints an INFO and creates nothing;
      with a .sql file and the control file installed it runs CREATE EXTENSION)
    resources has homepage, bugtracker and repository
    license "postgresql" is the LICENSE file at the top (the PostgreSQL
      License) and debian/copyright's License: PostgreSQL

Checks the spec's required keys (name, abstract, version, maintainer, license,
provides, meta-spec) and the formats of every key it uses: Terms, semantic
versions (SemVer 1.0.0, as the spec requires), license strings from the spec's
list, provides entries with file and version (the files must exist), prereqs
phases, relationships and version ranges, resources, tags, release_status,
and meta-spec version 1.0.0. Python standard library only.

    python3 test/pgxn/check_meta.py [SOURCE_ROOT]

Prints each problem and exits 1, or prints one "ok" line and exits 0.
"""
import json
import os
import re
import sys

# The spec's "License Strings" list.
LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
    "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
    "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
    "postgresql", "qpl_1_0", "ssleay", "sun", "zlib",
    "open_source", "restricted", "unrestricted", "unknown",
}
REQUIRED = ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec")
OPTIONAL = ("description", "generated_by", "tags", "no_index", "prereqs",
            "release_status", "resources")
PHASES = ("configure", "build", "test", "runtime", "develop")
RELATIONS = ("requires", "recommends", "suggests", "conflicts")
RELEASE_STATUS = ("stable", "testing", "unstable")

# SemVer 1.0.0 (the spec's "Semantic Version"): X.Y.Z, no leading zeros, and
# an optional pre-release tag appended with or without a hyphen (1.0.0beta1).
SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-?[A-Za-z][0-9A-Za-z-]*)?$")
# Version range: 0, a version, or comma-separated "op version" clauses.
RANGE_CLAUSE = re.compile(r"^(==|!=|>=|<=|>|<)\s*(\S+)$")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def is_term(value):
    """Term: a string of at least two characters, no slash, backslash,
    control character or whitespace."""
    return isinstance(value, str) and len(value) >= 2 and not re.search(r"[/\\\s\x00-\x1f\x7f]", value)


def is_tag(value):
    """Tag: a non-empty string of at most 255 characters, no slash,
    backslash or control character."""
    return isinstance(value, str) and 0 < len(value) <= 255 and not re.search(r"[/\\\x00-\x1f\x7f]", value)


def is_semver(value):
    return isinstance(value, str) and bool(SEMVER.match(value))


def is_range(value):
    if value == 0 or value == "0":
        return True
    if not isinstance(value, str):
        return False
    if is_semver(value):
        return True
    clauses = [c.strip() for c in value.split(",")]
    return all((m := RANGE_CLAUSE.match(c)) and is_semver(m.group(2)) for c in clauses)


def semver_of(control_version):
    """flint_keys.control's '1.1' as the PGXN version 1.1.0."""
    parts = control_version.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    return ".".join(str(int(p)) for p in parts + ["0"] * (3 - len(parts)))


def check_meta(meta, root, errors):
    def err(msg):
        errors.append(msg)

    if not isinstance(meta, dict):
        err("META.json is not a JSON object")
        return
    for key in REQUIRED:
        if key not in meta:
            err(f"missing required key {key!r}")
    for key in meta:
        if key not in REQUIRED + OPTIONAL and not key.lower().startswith("x_"):
            err(f"unknown key {key!r} (custom keys must start with x_ or X_)")

    if "name" in meta and not is_term(meta["name"]):
        err(f"name {meta['name']!r} is not a Term")
    for key in ("abstract", "description", "generated_by"):
        if key in meta and not (isinstance(meta[key], str) and meta[key].strip()):
            err(f"{key} must be a non-empty string")
    if "version" in meta and not is_semver(meta["version"]):
        err(f"version {meta['version']!r} is not a semantic version (X.Y.Z)")

    maint = meta.get("maintainer")
    if maint is not None:
        names = [maint] if isinstance(maint, str) else maint
        if not isinstance(names, list) or not names or not all(isinstance(m, str) and m.strip() for m in names):
            err("maintainer must be a string or a non-empty list of strings")

    lic = meta.get("license")
    if lic is not None:
        if isinstance(lic, str):
            if lic not in LICENSES:
                err(f"license {lic!r} is not one of the spec's license strings")
        elif isinstance(lic, list):
            if not lic or any(x not in LICENSES for x in lic):
                err(f"license list {lic!r} must hold only the spec's license strings")
        elif isinstance(lic, dict):
            if not lic or any(not isinstance(u, str) or not URI.match(u) for u in lic.values()):
                err("license map must map license names to URLs")
        else:
            err("license must be a string, a list or a map")

    provides = meta.get("provides")
    if provides is not None:
        if not isinstance(provides, dict) or not provides:
            err("provides must be a non-empty map of extension names")
        else:
            for ext, entry in provides.items():
                where = f"provides.{ext}"
                if not is_term(ext):
                    err(f"{where}: {ext!r} is not a Term")
                if not isinstance(entry, dict):
                    err(f"{where} must be a map")
                    continue
                for key in entry:
                    if key not in ("file", "version", "abstract", "docfile") and not key.lower().startswith("x_"):
                        err(f"{where}: unknown key {key!r}")
                for key in ("file", "version"):
                    if key not in entry:
                        err(f"{where}: missing required {key!r}")
                if "version" in entry and not is_semver(entry["version"]):
                    err(f"{where}.version {entry['version']!r} is not a semantic version")
                for key in ("file", "docfile"):
                    if key in entry:
                        path = entry[key]
                        if not isinstance(path, str) or os.path.isabs(path) or ".." in path.split("/"):
                            err(f"{where}.{key} must be a relative path inside the distribution")
                        elif not os.path.isfile(os.path.join(root, path)):
                            err(f"{where}.{key}: {path} does not exist")

    prereqs = meta.get("prereqs")
    if prereqs is not None:
        if not isinstance(prereqs, dict):
            err("prereqs must be a map of phases")
        else:
            for phase, rels in prereqs.items():
                if phase not in PHASES and not phase.lower().startswith("x_"):
                    err(f"prereqs: unknown phase {phase!r} (one of {', '.join(PHASES)})")
                if not isinstance(rels, dict):
                    err(f"prereqs.{phase} must be a map of relationships")
                    continue
                for rel, reqs in rels.items():
                    if rel not in RELATIONS and not rel.lower().startswith("x_"):
                        err(f"prereqs.{phase}: unknown relationship {rel!r} (one of {', '.join(RELATIONS)})")
                    if not isinstance(reqs, dict):
                        err(f"prereqs.{phase}.{rel} must map names to version ranges")
                        continue
                    for name, rng in reqs.items():
                        if not is_term(name):
                            err(f"prereqs.{phase}.{rel}: {name!r} is not a Term")
                        if not is_range(rng):
                            err(f"prereqs.{phase}.{rel}.{name}: {rng!r} is not a version range")

    resources = meta.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            err("resources must be a map")
        else:
            for key, value in resources.items():
                if key == "homepage":
                    if not (isinstance(value, str) and URI.match(value)):
                        err("resources.homepage must be a URI")
                elif key == "bugtracker":
                    if not isinstance(value, dict) or not set(value) & {"web", "mailto"}:
                        err("resources.bugtracker must be a map with web and/or mailto")
                    else:
                        if "web" in value and not URI.match(str(value["web"])):
                            err("resources.bugtracker.web must be a URI")
                        if "mailto" in value and not EMAIL.match(str(value["mailto"])):
                            err("resources.bugtracker.mailto must be an email address")
                elif key == "repository":
                    if not isinstance(value, dict) or not set(value) & {"url", "web"}:
                        err("resources.repository must be a map with url and/or web")
                    else:
                        for sub in ("url", "web"):
                            if sub in value and not URI.match(str(value[sub])):
                                err(f"resources.repository.{sub} must be a URI")
                        if "url" in value and "type" not in value:
                            err("resources.repository.type is required with url")
                        if "type" in value and not (is_term(value["type"]) and value["type"].islower()):
                            err("resources.repository.type must be a lower-case Term (git, svn, ...)")
                elif not key.lower().startswith("x_"):
                    err(f"resources: unknown key {key!r}")

    if "tags" in meta:
        tags = meta["tags"]
        if not isinstance(tags, list) or not tags or not all(is_tag(t) for t in tags):
            err("tags must be a non-empty list of Tags (at most 255 characters, no slash, backslash or control)")
    if "release_status" in meta and meta["release_status"] not in RELEASE_STATUS:
        err(f"release_status must be one of {', '.join(RELEASE_STATUS)}")
    if "no_index" in meta:
        ni = meta["no_index"]
        if not isinstance(ni, dict) or any(k not in ("file", "directory") or not isinstance(v, (str, list))
                                           for k, v in ni.items()):
            err("no_index must map file and/or directory to a path or a list of paths")

    spec = meta.get("meta-spec")
    if spec is not None:
        if not isinstance(spec, dict) or spec.get("version") != "1.0.0":
            err("meta-spec must be a map whose version is \"1.0.0\"")
        elif "url" in spec and not URI.match(str(spec["url"])):
            err("meta-spec.url must be a URI")


def control_default_version(root):
    with open(os.path.join(root, "flint_keys.control"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^\s*default_version\s*=\s*'([^']*)'", line)
            if m:
                return m.group(1)
    return None


def changelog_version(root):
    """The top entry's version in debian/changelog: 'flint-keys (1.1-1) ...'."""
    path = os.path.join(root, "debian", "changelog")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        m = re.match(r"^\S+ \(([^)]+)\)", f.readline())
    return m.group(1) if m else ""


def check_versions(meta, root, errors):
    control = control_default_version(root)
    if control is None:
        errors.append("flint_keys.control has no default_version")
        return
    want = semver_of(control)
    if want is None:
        errors.append(f"default_version {control!r} is not dotted numbers")
        return
    if isinstance(meta, dict):
        if meta.get("version") != want:
            errors.append(f"META.json version {meta.get('version')!r} != {want!r} "
                          f"(flint_keys.control default_version '{control}')")
        ext = meta.get("provides", {}).get("flint_keys") if isinstance(meta.get("provides"), dict) else None
        if not isinstance(ext, dict):
            errors.append("provides has no flint_keys entry")
        elif ext.get("version") != want:
            errors.append(f"provides.flint_keys.version {ext.get('version')!r} != {want!r} "
                          f"(flint_keys.control default_version '{control}')")
    deb = changelog_version(root)
    if deb is not None:
        upstream = deb.rsplit("-", 1)[0] if "-" in deb else deb
        upstream = upstream.split(":", 1)[-1]  # an epoch, if any
        if upstream != control:
            errors.append(f"debian/changelog is at {deb!r}, upstream {upstream!r} != default_version '{control}'")
    return control, want, deb


# A sentence every copy of the PostgreSQL License has (LICENSE, debian/copyright
# with its DEP-5 line folding undone).
POSTGRESQL_LICENSE = ("Permission to use, copy, modify, and distribute this software and its documentation "
                      "for any purpose, without fee, and without a written agreement is hereby granted")
RESOURCES_REQUIRED = ("homepage", "bugtracker", "repository")


def unfolded(text):
    """Text with DEP-5 continuation markers (' .') and line breaks made single spaces."""
    return " ".join(w for w in text.split() if w != ".")


def check_release(meta, root, errors):
    """What a flint_keys release needs beyond the spec (see the module doc)."""
    if not isinstance(meta, dict):
        return
    control = control_default_version(root)
    ext = meta.get("provides", {}).get("flint_keys") if isinstance(meta.get("provides"), dict) else None
    if isinstance(ext, dict) and control is not None:
        want = f"flint_keys--{control}.sql"
        if ext.get("file") != want:
            errors.append(f"provides.flint_keys.file {ext.get('file')!r} != {want!r}: the full install script of "
                          f"default_version '{control}' (pgxn load skips an extension whose file is not .sql)")
    resources = meta.get("resources")
    missing = [k for k in RESOURCES_REQUIRED if not isinstance(resources, dict) or k not in resources]
    if missing:
        errors.append(f"resources: missing {', '.join(missing)}")
    if meta.get("license") == "postgresql":
        try:
            with open(os.path.join(root, "LICENSE"), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            errors.append("license 'postgresql' but no LICENSE file at the top of the distribution")
        else:
            if not text.startswith("PostgreSQL License") or POSTGRESQL_LICENSE not in unfolded(text):
                errors.append("license 'postgresql' but LICENSE is not the PostgreSQL License")
        path = os.path.join(root, "debian", "copyright")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if not re.search(r"^License: PostgreSQL$", text, re.M) or POSTGRESQL_LICENSE not in unfolded(text):
                errors.append("license 'postgresql' but debian/copyright has no License: PostgreSQL with its text")
    elif "license" in meta:
        errors.append(f"license {meta['license']!r}: flint_keys is released under the PostgreSQL License "
                      "(\"postgresql\", the LICENSE file)")


def main(argv):
    root = os.path.abspath(argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
    errors = []
    try:
        with open(os.path.join(root, "META.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        print(f"META.json: {e}")
        return 1
    check_meta(meta, root, errors)
    versions = check_versions(meta, root, errors)
    check_release(meta, root, errors)
    for e in errors:
        print(f"META.json: {e}")
    if errors:
        return 1
    control, want, deb = versions
    print(f"ok: META.json follows PGXN Meta Spec 1.0.0; version {want} = flint_keys.control '{control}'"
          + (f" = debian/changelog {deb}" if deb else "")
          + f"; provides {meta['provides']['flint_keys']['file']}; license {meta['license']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
