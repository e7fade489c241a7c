#!/usr/bin/env python3
"""Self-test of check_meta.py: the real META.json passes, and each kind of
mistake the checker exists for is caught. Standard library only:
python3 test/pgxn/test_check_meta.py"""
import copy
import json
import os
import re
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import check_meta  # noqa: E402


class CheckMetaTest(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(ROOT, "META.json"), encoding="utf-8") as f:
            self.meta = json.load(f)
        self.dir = tempfile.mkdtemp()
        for name in ("flint_keys.control", "README.md"):
            shutil.copy(os.path.join(ROOT, name), self.dir)
        for ext in self.meta["provides"].values():
            for key in ("file", "docfile"):
                if key in ext and not os.path.exists(os.path.join(self.dir, ext[key])):
                    os.makedirs(os.path.dirname(os.path.join(self.dir, ext[key])), exist_ok=True)
                    shutil.copy(os.path.join(ROOT, ext[key]), os.path.join(self.dir, ext[key]))
        os.mkdir(os.path.join(self.dir, "debian"))
        for name in ("changelog", "copyright"):
            shutil.copy(os.path.join(ROOT, "debian", name), os.path.join(self.dir, "debian"))
        shutil.copy(os.path.join(ROOT, "LICENSE"), self.dir)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def errors(self, meta):
        errors = []
        check_meta.check_meta(meta, self.dir, errors)
        check_meta.check_versions(meta, self.dir, errors)
        check_meta.check_release(meta, self.dir, errors)
        return errors

    def write(self, name, text):
        with open(os.path.join(self.dir, name), "w", encoding="utf-8") as f:
            f.write(text)

    def assertCaught(self, mutate, needle):
        meta = copy.deepcopy(self.meta)
        mutate(meta)
        errors = self.errors(meta)
        self.assertTrue(any(needle in e for e in errors), f"expected an error with {needle!r}, got {errors}")

    def test_real_meta_passes(self):
        self.assertEqual(self.errors(self.meta), [])

    def test_required_keys(self):
        for key in check_meta.REQUIRED:
            self.assertCaught(lambda m, k=key: m.pop(k), f"missing required key {key!r}")

    def test_versions_must_be_semver(self):
        self.assertCaught(lambda m: m.update(version="1.1"), "not a semantic version")
        self.assertCaught(lambda m: m["provides"]["flint_keys"].update(version="01.1.0"), "not a semantic version")

    def test_license_from_the_spec_list(self):
        self.assertCaught(lambda m: m.update(license="GPL-2.0-or-later"), "not one of the spec's license strings")
        self.assertCaught(lambda m: m.update(license=["postgresql", "beerware"]), "license list")

    def test_provides_entries(self):
        self.assertCaught(lambda m: m["provides"]["flint_keys"].pop("file"), "missing required 'file'")
        self.assertCaught(lambda m: m["provides"]["flint_keys"].pop("version"), "missing required 'version'")
        self.assertCaught(lambda m: m["provides"]["flint_keys"].update(file="nope.sql"), "does not exist")

    def test_provides_file_is_the_install_script(self):
        # pgxn load runs CREATE EXTENSION only for a .sql file; the control file made it print an INFO.
        self.assertCaught(lambda m: m["provides"]["flint_keys"].update(file="flint_keys.control"), "pgxn load skips")
        self.write("flint_keys--1.0.sql", "-- an older install script\n")
        self.assertCaught(lambda m: m["provides"]["flint_keys"].update(file="flint_keys--1.0.sql"),
                          "the full install script")
        # The control file bumped alone: the META.json file names the old version's script.
        with open(os.path.join(self.dir, "flint_keys.control"), encoding="utf-8") as f:
            control = f.read()
        self.write("flint_keys.control", re.sub(r"(?m)^default_version = .*$", "default_version = '99.0'", control))
        self.assertTrue(any("flint_keys--99.0.sql" in e for e in self.errors(self.meta)))

    def test_resources(self):
        for key in check_meta.RESOURCES_REQUIRED:
            self.assertCaught(lambda m, k=key: m["resources"].pop(k), f"resources: missing {key}")
        self.assertCaught(lambda m: m.pop("resources"), "resources: missing homepage, bugtracker, repository")
        self.assertCaught(lambda m: m["resources"].update(homepage="github.com/flint-keys"), "homepage must be a URI")
        self.assertCaught(lambda m: m["resources"]["repository"].pop("type"), "repository.type is required")
        self.assertCaught(lambda m: m["resources"]["repository"].update(type="Git Hub"), "repository.type must be")
        self.assertCaught(lambda m: m["resources"]["repository"].update(web="not a uri"), "repository.web must be")
        self.assertCaught(lambda m: m["resources"].update(repository={"type": "git"}), "map with url and/or web")
        self.assertCaught(lambda m: m["resources"]["bugtracker"].update(web="nope"), "bugtracker.web must be")

    def test_license_is_the_postgresql_license(self):
        self.assertEqual(self.meta["license"], "postgresql")
        self.assertCaught(lambda m: m.update(license="restricted"), "released under the PostgreSQL License")
        os.remove(os.path.join(self.dir, "LICENSE"))
        self.assertTrue(any("no LICENSE file" in e for e in self.errors(self.meta)))
        self.write("LICENSE", "All rights reserved.\n")
        self.assertTrue(any("LICENSE is not the PostgreSQL License" in e for e in self.errors(self.meta)))
        shutil.copy(os.path.join(ROOT, "LICENSE"), self.dir)
        self.assertEqual(self.errors(self.meta), [])
        with open(os.path.join(ROOT, "debian", "copyright"), encoding="utf-8") as f:
            text = f.read()
        self.write(os.path.join("debian", "copyright"), text.replace("License: PostgreSQL", "License: restricted"))
        self.assertTrue(any("debian/copyright" in e for e in self.errors(self.meta)))
        self.write(os.path.join("debian", "copyright"), text.split("\nLicense: PostgreSQL\n ")[0] + "\n")
        self.assertTrue(any("debian/copyright" in e for e in self.errors(self.meta)))

    def test_prereqs_structure(self):
        self.assertCaught(lambda m: m["prereqs"].update(install={"requires": {}}), "unknown phase 'install'")
        self.assertCaught(lambda m: m["prereqs"]["runtime"].update(needs={}), "unknown relationship 'needs'")
        self.assertCaught(lambda m: m["prereqs"]["runtime"]["requires"].update(PostgreSQL="15"),
                          "not a version range")

    def test_meta_spec_version(self):
        self.assertCaught(lambda m: m["meta-spec"].update(version="2.0.0"), "meta-spec")

    def test_versions_agree(self):
        self.assertCaught(lambda m: m.update(version="99.0.0"), "META.json version")
        self.assertCaught(lambda m: m["provides"]["flint_keys"].update(version="99.0.0"), "provides.flint_keys.version")
        with open(os.path.join(self.dir, "debian", "changelog"), "r+", encoding="utf-8") as f:
            text = f.read().replace("(" + check_meta.changelog_version(ROOT) + ")", "(0.0.1-1)", 1)
            f.seek(0), f.write(text), f.truncate()
        self.assertTrue(any("debian/changelog" in e for e in self.errors(self.meta)))
        # A control file bumped alone (before META.json and the changelog follow) fails.
        with open(os.path.join(self.dir, "flint_keys.control"), "w", encoding="utf-8") as f:
            f.write("default_version = '99.0'\n")
        self.assertTrue(any("META.json version" in e and "'99.0'" in e for e in self.errors(self.meta)))

    def test_semver_of_control_version(self):
        self.assertEqual(check_meta.semver_of("1.1"), "1.1.0")
        self.assertEqual(check_meta.semver_of("2"), "2.0.0")
        self.assertEqual(check_meta.semver_of("1.2.3"), "1.2.3")
        self.assertIsNone(check_meta.semver_of("1.2beta"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
