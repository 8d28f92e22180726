#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Checks that the vcpkg port and the Conan recipe agree with the CMake project.

    scripts/check-packaging.py [--configure]

Static checks (no network, no build; neither registry is reachable here):
  - version: project(brokerha VERSION x.y.z) == packaging/vcpkg/vcpkg.json "version" ==
    packaging/conan/conanfile.py `version`;
  - options: every BROKERHA_* variable a recipe sets is an option of the CMake project, both
    recipes set the same ones, and every CMake option is set by them (except the developer-only
    ones listed in DEVELOPER_ONLY), with the same defaults for the feature options;
  - features: vcpkg features <-> vcpkg_check_features <-> Conan options <-> CMake options;
  - target and package names: brokerha::brokerha / brokerha in the CMake project (alias,
    export namespace, install dir), the vcpkg portfile (config fixup path) and usage file, the
    Conan package_info and test_package; the tool name brokerha-server;
  - dependencies: each package cmake/dependencies.cmake finds has its port in both recipes.

--configure also configures the project against tests/packaging/ports (stand-ins of the
ports' CMake config files: c-ares::cares, header-only-shaped httplib::httplib, asio::asio, the
`rapidjson` target, yaml-cpp::yaml-cpp only) and checks that the port branches are taken, that
the exported package names those targets, and that a consumer finds the package's static
dependencies through them (and fails without them).

Exit status 0 when every check passes; each failure is printed as "check-packaging: FAIL: ...".
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# CMake options a package build has no business setting (developer and CI switches).
DEVELOPER_ONLY = {"BROKERHA_SANITIZER"}
# Recipe feature -> CMake option, per packaging system.
VCPKG_FEATURES = {"http-api": "BROKERHA_WITH_HTTP_API", "server": "BROKERHA_BUILD_SERVER"}
CONAN_OPTIONS = {"with_http_api": "BROKERHA_WITH_HTTP_API", "with_server": "BROKERHA_BUILD_SERVER"}
# find_package name in cmake/dependencies.cmake -> (vcpkg port, Conan reference name).
DEPENDENCIES = {
    "asio": ("asio", "asio"),
    "c-ares": ("c-ares", "c-ares"),
    "OpenSSL": ("openssl", "openssl"),
    "httplib": ("cpp-httplib", "cpp-httplib"),
    "RapidJSON": ("rapidjson", "rapidjson"),
    "yaml-cpp": ("yaml-cpp", "yaml-cpp"),
}
# Found by dependencies.cmake but not packaged: system or test-only, or (mimalloc) optional for
# brokerha-server and turned off by both recipes (BROKERHA_WITH_MIMALLOC=OFF).
NOT_PACKAGED = {"Threads", "PkgConfig", "doctest", "mimalloc"}

failures = []


def fail(message):
    failures.append(message)
    print(f"check-packaging: FAIL: {message}")


_reported = [0]


def ok(message):
    """Reports a section as passed unless it added failures since the last report."""
    if len(failures) == _reported[0]:
        print(f"check-packaging: ok: {message}")
    _reported[0] = len(failures)


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def strip_cmake_comments(text):
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


# --- the CMake project ------------------------------------------------------------------------
def cmake_project():
    top = strip_cmake_comments(read("CMakeLists.txt"))
    m = re.search(r"project\(\s*brokerha\b[^)]*?\bVERSION\s+([0-9]+\.[0-9]+\.[0-9]+)", top, re.S)
    if not m:
        fail("cannot read project(brokerha VERSION ...) from CMakeLists.txt")
        sys.exit(1)
    options = {}
    for name, default in re.findall(r"option\(\s*(BROKERHA_\w+)\s+\"[^\"]*\"\s+([^)\s]+)\s*\)",
                                    top, re.S):
        options[name] = default
    for name in re.findall(r"set\(\s*(BROKERHA_\w+)\s+\"[^\"]*\"\s+CACHE\b", top):
        options[name] = ""
    lib = strip_cmake_comments(read("libbrokerha", "CMakeLists.txt"))
    server = strip_cmake_comments(read("brokerha-server", "CMakeLists.txt"))
    deps = strip_cmake_comments(read("cmake", "dependencies.cmake"))
    found = set(re.findall(r"find_package\(\s*([\w-]+)", deps))
    # brokerha_find_package_or_pkgconfig(<var> <config package> ...)
    found |= set(re.findall(r"brokerha_find_package_or_pkgconfig\(\s*\w+\s+([\w-]+)", deps))
    found.discard("${package}")
    return {
        "version": m.group(1),
        "options": options,
        "alias": re.search(r"add_library\(\s*(\S+)\s+ALIAS\s+brokerha\s*\)", lib),
        "namespace": re.search(r"install\(EXPORT\s+brokerha-targets\s+NAMESPACE\s+(\S+)", lib),
        "export_name": re.search(r"EXPORT_NAME\s+([\w-]+)", lib),
        "config_dir": re.search(r"set\(BROKERHA_CMAKE_INSTALL_DIR\s+\"\$\{CMAKE_INSTALL_LIBDIR\}/"
                                r"([^\"]+)\"\)", lib),
        "library": "brokerha" if re.search(r"add_library\(\s*brokerha\s", lib) else None,
        "server": "brokerha-server" if "add_executable(brokerha-server" in server else None,
        "dependencies": found,
    }


def check_cmake(cm):
    for key in ("alias", "namespace", "export_name", "config_dir"):
        if not cm[key]:
            fail(f"cannot find the {key} of the brokerha target in libbrokerha/CMakeLists.txt")
            sys.exit(1)
    target = cm["namespace"].group(1) + cm["export_name"].group(1)
    if cm["alias"].group(1) != target or target != "brokerha::brokerha":
        fail(f"in-tree alias {cm['alias'].group(1)} and installed target {target} differ "
             "(both must be brokerha::brokerha)")
    if cm["config_dir"].group(1) != "cmake/brokerha":
        fail(f"package config installed to lib/{cm['config_dir'].group(1)}, not lib/cmake/brokerha")
    unknown = cm["dependencies"] - set(DEPENDENCIES) - NOT_PACKAGED
    if unknown:
        fail(f"cmake/dependencies.cmake finds {sorted(unknown)}: add them to DEPENDENCIES here "
             "and to both recipes")
    ok(f"CMake project {cm['version']}, target brokerha::brokerha, "
       f"options {', '.join(sorted(cm['options']))}")


# --- vcpkg --------------------------------------------------------------------------------------
def check_vcpkg(cm):
    manifest = json.loads(read("packaging", "vcpkg", "vcpkg.json"))
    portfile = strip_cmake_comments(read("packaging", "vcpkg", "portfile.cmake"))
    usage = read("packaging", "vcpkg", "usage")

    if manifest.get("name") != "brokerha":
        fail(f"vcpkg.json name is {manifest.get('name')!r}, not 'brokerha'")
    if manifest.get("version") != cm["version"]:
        fail(f"vcpkg.json version {manifest.get('version')} != CMake project {cm['version']}")

    set_options = set(re.findall(r"-D(BROKERHA_\w+)=", portfile))
    m = re.search(r"vcpkg_check_features\((.*?)\)", portfile, re.S)
    feature_map = {}
    if not m:
        fail("portfile.cmake has no vcpkg_check_features()")
    else:
        words = m.group(1).split()
        if "FEATURES" in words:
            rest = words[words.index("FEATURES") + 1:]
            feature_map = dict(zip(rest[0::2], rest[1::2]))
    features = set(manifest.get("features", {}))
    if feature_map != VCPKG_FEATURES:
        fail(f"vcpkg_check_features maps {feature_map}, expected {VCPKG_FEATURES}")
    if features != set(VCPKG_FEATURES):
        fail(f"vcpkg.json features {sorted(features)} != {sorted(VCPKG_FEATURES)}")
    set_options |= set(feature_map.values())
    for name in sorted(set_options - set(cm["options"])):
        fail(f"portfile.cmake sets {name}, which is not an option of the CMake project")

    defaults = set(manifest.get("default-features", []))
    for feature, option in VCPKG_FEATURES.items():
        if option in cm["options"] and cm["options"][option] in ("ON", "OFF"):
            if (feature in defaults) != (cm["options"][option] == "ON"):
                fail(f"vcpkg default feature {feature} disagrees with {option} "
                     f"(CMake default {cm['options'][option]})")

    if not re.search(r"vcpkg_cmake_config_fixup\([^)]*CONFIG_PATH\s+lib/cmake/brokerha\b",
                     portfile):
        fail("portfile.cmake must call vcpkg_cmake_config_fixup(... CONFIG_PATH lib/cmake/brokerha)")
    tools = re.search(r"vcpkg_copy_tools\(\s*TOOL_NAMES\s+([\w-]+)", portfile)
    if not tools or tools.group(1) != cm["server"]:
        fail(f"vcpkg_copy_tools names {tools.group(1) if tools else None}, the executable is "
             f"{cm['server']}")
    if "find_package(brokerha CONFIG REQUIRED)" not in usage or "brokerha::brokerha" not in usage:
        fail("packaging/vcpkg/usage must show find_package(brokerha CONFIG REQUIRED) and "
             "brokerha::brokerha")

    def dep_names(deps):
        return {d if isinstance(d, str) else d["name"] for d in deps}

    all_deps = dep_names(manifest.get("dependencies", []))
    for feature in manifest.get("features", {}).values():
        all_deps |= dep_names(feature.get("dependencies", []))
    all_deps -= {"vcpkg-cmake", "vcpkg-cmake-config", "brokerha"}
    wanted = {DEPENDENCIES[d][0] for d in cm["dependencies"] if d in DEPENDENCIES}
    if all_deps != wanted:
        fail(f"vcpkg.json depends on {sorted(all_deps)}, the CMake project finds {sorted(wanted)}")
    ok(f"vcpkg port {manifest.get('version')}, features {sorted(features)}, "
       f"dependencies {sorted(all_deps)}")
    return set_options


# --- Conan --------------------------------------------------------------------------------------
def literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def check_conan(cm):
    source = read("packaging", "conan", "conanfile.py")
    tree = ast.parse(source)
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if cls is None:
        fail("conanfile.py defines no recipe class")
        return set()
    attrs = {}
    methods = {}
    for node in cls.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name):
            attrs[node.targets[0].id] = literal(node.value)
        elif isinstance(node, ast.FunctionDef):
            methods[node.name] = node

    if attrs.get("name") != "brokerha":
        fail(f"conanfile.py name is {attrs.get('name')!r}")
    if attrs.get("version") != cm["version"]:
        fail(f"conanfile.py version {attrs.get('version')} != CMake project {cm['version']}")

    options = attrs.get("options") or {}
    defaults = attrs.get("default_options") or {}
    feature_options = set(options) - {"shared", "fPIC"}
    if feature_options != set(CONAN_OPTIONS):
        fail(f"conanfile.py options {sorted(feature_options)} != {sorted(CONAN_OPTIONS)}")
    if set(defaults) != set(options):
        fail("conanfile.py default_options does not cover exactly its options")

    # generate(): tc.cache_variables["BROKERHA_X"] = <expr>
    set_options = {}
    gen = methods.get("generate")
    for node in ast.walk(gen) if gen else []:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript)
                and isinstance(node.targets[0].value, ast.Attribute)
                and node.targets[0].value.attr in ("cache_variables", "variables")):
            key = literal(node.targets[0].slice)
            if isinstance(key, str):
                set_options[key] = ast.unparse(node.value)
    for name in sorted(set(set_options) - set(cm["options"])):
        fail(f"conanfile.py sets {name}, which is not an option of the CMake project")
    for option, cmake_name in CONAN_OPTIONS.items():
        expr = set_options.get(cmake_name, "")
        if f"self.options.{option}" not in expr:
            fail(f"conanfile.py must set {cmake_name} from self.options.{option} (has {expr!r})")
        cmake_default = cm["options"].get(cmake_name)
        if cmake_name == "BROKERHA_WITH_HTTP_API" and cmake_default in ("ON", "OFF"):
            if bool(defaults.get(option)) != (cmake_default == "ON"):
                fail(f"conan default {option}={defaults.get(option)} disagrees with "
                     f"{cmake_name} (CMake default {cmake_default})")

    properties = dict(re.findall(r"set_property\(\"(\w+)\",\s*\"([^\"]+)\"\)", source))
    if properties.get("cmake_target_name") != "brokerha::brokerha":
        fail(f"conan cmake_target_name is {properties.get('cmake_target_name')!r}")
    if properties.get("cmake_file_name") != "brokerha":
        fail(f"conan cmake_file_name is {properties.get('cmake_file_name')!r}")
    if not re.search(r"cpp_info\.libs\s*=\s*\[\s*\"" + re.escape(cm["library"] or "?") + r"\"\s*\]",
                     source):
        fail("conan cpp_info.libs must be [\"brokerha\"]")

    requires = set(re.findall(r"self\.requires\(\"([\w-]+)/", source))
    wanted = {DEPENDENCIES[d][1] for d in cm["dependencies"] if d in DEPENDENCIES}
    if requires != wanted:
        fail(f"conanfile.py requires {sorted(requires)}, the CMake project finds {sorted(wanted)}")

    # The exported sources must hold every directory the top-level CMakeLists.txt adds when
    # tests, examples and benchmarks are off.
    patterns = attrs.get("_source_paths") or ()
    for needed in ("CMakeLists.txt", "cmake/*", "libbrokerha/*", "brokerha-server/*"):
        if needed not in patterns:
            fail(f"conanfile.py _source_paths lacks {needed}")

    test_cmake = read("packaging", "conan", "test_package", "CMakeLists.txt")
    if ("find_package(brokerha CONFIG REQUIRED)" not in test_cmake
            or "brokerha::brokerha" not in test_cmake):
        fail("test_package/CMakeLists.txt must use find_package(brokerha CONFIG REQUIRED) and "
             "brokerha::brokerha")
    if not os.path.exists(os.path.join(ROOT, "packaging", "conan", "test_package", "conanfile.py")):
        fail("packaging/conan/test_package/conanfile.py is missing")
    ok(f"Conan recipe {attrs.get('version')}, options {sorted(options)}, "
       f"requires {sorted(requires)}")
    return set(set_options)


def check_recipes_agree(cm, vcpkg_options, conan_options):
    if vcpkg_options != conan_options:
        fail(f"the recipes set different CMake options: vcpkg only {sorted(vcpkg_options - conan_options)}, "
             f"conan only {sorted(conan_options - vcpkg_options)}")
    unset = set(cm["options"]) - vcpkg_options - DEVELOPER_ONLY
    if unset:
        fail(f"CMake options {sorted(unset)} are set by neither recipe: decide their value for "
             "packages (packaging/vcpkg/portfile.cmake, packaging/conan/conanfile.py)")
    ok("both recipes set the same CMake options, and every packaging-relevant option")


# --- configure against the ports' shapes ---------------------------------------------------------
def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def check_port_shapes():
    ports = os.path.join(ROOT, "tests", "packaging", "ports")
    work = tempfile.mkdtemp(prefix="brokerha-ports-shape.")
    try:
        build = os.path.join(work, "build")
        r = run(["cmake", "-S", ROOT, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_PREFIX_PATH={ports}", "-DBROKERHA_BUILD_TESTS=OFF",
                 "-DBROKERHA_BUILD_EXAMPLES=OFF", "-DBROKERHA_BUILD_BENCH=OFF",
                 "-DBROKERHA_BUILD_SERVER=ON", "-DBROKERHA_INSTALL=ON"])
        if r.returncode != 0:
            print(r.stdout)
            fail("configuring against the ports' stand-ins failed")
            return
        for name in ("c-ares", "httplib", "asio", "RapidJSON", "yaml-cpp"):
            if f"ports stand-in: {name}" not in r.stdout:
                fail(f"the {name} stand-in was not used (Debian's package won?)")
        for line in ("brokerha: c-ares: c-ares::cares (CMake config)",
                     "brokerha: httplib: httplib::httplib (CMake config)",
                     "brokerha: RapidJSON: rapidjson (CMake config)"):
            if line not in r.stdout:
                fail(f"configure did not say '{line}'")
        with open(os.path.join(build, "brokerha-targets.cmake"), encoding="utf-8") as f:
            targets = f.read()
        for dep in ("c-ares::cares", "httplib::httplib"):
            if f"$<LINK_ONLY:{dep}>" not in targets:
                fail(f"the exported static package does not link {dep}")
        if "PkgConfig::" in targets:
            fail("the exported package still names a PkgConfig:: target")
        ok("configured against the ports' shapes; the package exports c-ares::cares and "
           "httplib::httplib")

        consumer = os.path.join(ROOT, "tests", "install", "consumer")
        r = run(["cmake", "-S", consumer, "-B", os.path.join(work, "consumer"), "-G", "Ninja",
                 f"-Dbrokerha_DIR={build}", f"-DCMAKE_PREFIX_PATH={ports}"])
        if r.returncode != 0:
            print(r.stdout)
            fail("a consumer of the ports-shaped package did not configure")
        # Without the ports, the static package cannot find c-ares::cares and must say so.
        r = run(["cmake", "-S", consumer, "-B", os.path.join(work, "consumer-noports"), "-G",
                 "Ninja", f"-Dbrokerha_DIR={build}"])
        if r.returncode == 0 or "c-ares" not in r.stdout:
            print(r.stdout)
            fail("without the ports, the package did not fail on the missing c-ares config")
        ok("a consumer finds the static package's dependencies through the ports' configs")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    configure = "--configure" in sys.argv[1:]
    cm = cmake_project()
    check_cmake(cm)
    vcpkg_options = check_vcpkg(cm)
    conan_options = check_conan(cm)
    check_recipes_agree(cm, vcpkg_options, conan_options)
    if configure:
        check_port_shapes()
    if failures:
        print(f"check-packaging: {len(failures)} check(s) failed")
        return 1
    print("check-packaging: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
