"""Config loader: every kind of operator mistake gives one precise error; merges are exact.

All tests load real files from a temporary directory through the public API.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from oneiric.config import (
    DEFAULT_INCLUDE,
    ComponentConfig,
    Config,
    DaemonConfig,
    ResolvedPaths,
    check_factories,
    default_paths,
    files_digest,
    load_config,
    parse_config_text,
    resolve_factory,
    watch_paths,
)
from oneiric.errors import ConfigError

COMPONENT = """
[[component]]
domain = "{domain}"
key = "{key}"
provider = "{provider}"
factory = "pkg.mod:Factory"
"""


def comp(
    domain: str = "adapter", key: str = "cache", provider: str = "memory", **extra: str
) -> str:
    """A [[component]] table; ``extra`` values are raw TOML."""
    text = COMPONENT.format(domain=domain, key=key, provider=provider)
    return text + "".join(f"{k} = {v}\n" for k, v in extra.items())


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def main_file(tmp_path: Path, text: str = "") -> Path:
    return write(tmp_path / "oneiricd.toml", text)


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = main_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# --------------------------------------------------------------------------- happy paths


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = main_file(tmp_path)
    config = load_config(path)
    assert config == Config(
        path=str(path),
        daemon=DaemonConfig(),
        components=(),
        selections={},
        remote=None,
        include=DEFAULT_INCLUDE,
        files=(str(path),),
        digest=files_digest(path, DEFAULT_INCLUDE),  # what it was parsed from
    )


def test_the_digest_follows_the_bytes_of_every_file(tmp_path: Path) -> None:
    """A reload skips the parse only when the main file and every drop-in (the set of them
    too) are byte for byte what the running config was parsed from."""
    path = main_file(tmp_path, 'include = ["conf.d/*.toml"]\n')
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.toml").write_text("")
    config = load_config(path)
    assert files_digest(path, config.include) == config.digest
    (tmp_path / "conf.d" / "b.toml").write_text("")  # a new drop-in, even an empty one
    assert files_digest(path, config.include) != config.digest
    (tmp_path / "conf.d" / "b.toml").unlink()
    (tmp_path / "conf.d" / "a.toml").write_text("# a comment\n")  # any byte
    assert files_digest(path, config.include) != config.digest
    (tmp_path / "conf.d" / "a.toml").write_text("")
    assert files_digest(path, config.include) == config.digest


def test_spec_example_loads(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        """
        [daemon]
        socket_mode = "0660"
        admin_group = "ops"
        drain_timeout = "30s"
        health_interval = "5s"
        stop_timeout = 0
        idle_timeout = 90
        log_level = "DEBUG"
        watch = false
        socket = "run/d.sock"
        health_file = "/abs/health.json"

        [[component]]
        domain = "adapter"
        key = "cache"
        provider = "memory"
        factory = "oneiric.builtin.cache:MemoryCache"
        priority = 10
        settings = { max_entries = 10000 }

        [[component]]
        domain = "task"
        key = "tick"
        provider = "builtin"
        factory = "pkg.tasks:Tick"
        every = "1m30s"
        concurrency = 2

        [[component]]
        domain = "event"
        key = "audit"
        provider = "log"
        factory = "pkg.events:Log"
        topics = ["user.*", "system.boot"]
        queue_size = 5

        [selections.adapter]
        cache = "memory"

        [remote]
        url = "https://config.example.net/oneiric/"
        root = "keys/root.json"
        targets = ["fleet.toml", "groups/web.toml"]
        refresh = "5m"
        refresh_max = "15m"
        allow_factories = ["myco.components.", "oneiric.builtin."]
        max_bytes = "4MiB"
        """,
    )
    config = load_config(path)
    d = config.daemon
    assert d.socket_mode == 0o660
    assert (d.admin_group, d.drain_timeout, d.health_interval) == ("ops", 30.0, 5.0)
    assert (d.stop_timeout, d.idle_timeout, d.log_level, d.watch) == (0.0, 90.0, "debug", False)
    assert d.socket == str(tmp_path / "run" / "d.sock")  # relative to the main file
    assert d.health_file == "/abs/health.json"
    cache, tick, audit = config.components
    assert cache == ComponentConfig(
        domain="adapter",
        key="cache",
        provider="memory",
        factory="oneiric.builtin.cache:MemoryCache",
        priority=10,
        settings={"max_entries": 10000},
        source=str(path),
    )
    assert (tick.every, tick.concurrency) == (90.0, 2)
    assert (audit.topics, audit.queue_size) == (("user.*", "system.boot"), 5)
    assert config.selections == {"adapter": {"cache": "memory"}}
    assert config.remote is not None
    assert config.remote.url == "https://config.example.net/oneiric/"
    assert config.remote.refresh == 300.0
    assert config.remote.root == str(tmp_path / "keys" / "root.json")  # relative to the file
    assert config.remote.targets == ("fleet.toml", "groups/web.toml")
    assert (config.remote.refresh_max, config.remote.max_bytes) == (900.0, 4 * 1024 * 1024)
    assert config.remote.allow_factories == ("myco.components.", "oneiric.builtin.")


def test_octal_toml_integer_socket_mode(tmp_path: Path) -> None:
    config = load_config(main_file(tmp_path, "[daemon]\nsocket_mode = 0o600\n"))
    assert config.daemon.socket_mode == 0o600


@pytest.mark.parametrize(("text", "mode"), [('"0o640"', 0o640), ('"640"', 0o640), ('"0"', 0)])
def test_socket_mode_string_forms(tmp_path: Path, text: str, mode: int) -> None:
    config = load_config(main_file(tmp_path, f"[daemon]\nsocket_mode = {text}\n"))
    assert config.daemon.socket_mode == mode


def test_remote_local_path_resolved_against_main_file(tmp_path: Path) -> None:
    text = '[remote]\nurl = "repo"\nroot = "root.json"\n'
    config = load_config(main_file(tmp_path, text))
    assert config.remote is not None
    assert config.remote.url == str(tmp_path / "repo")
    assert config.remote.root == str(tmp_path / "root.json")


def test_remote_file_url_is_a_local_directory(tmp_path: Path) -> None:
    text = '[remote]\nurl = "file:///srv/repo"\nroot = "/etc/r.json"\n'
    config = load_config(main_file(tmp_path, text))
    assert config.remote is not None
    assert config.remote.url == "/srv/repo"


def test_remote_http_url_gets_a_trailing_slash(tmp_path: Path) -> None:
    text = '[remote]\nurl = "https://cdn.example/oneiric"\nroot = "/etc/r.json"\n'
    config = load_config(main_file(tmp_path, text))
    assert config.remote is not None
    assert config.remote.url == "https://cdn.example/oneiric/"
    assert config.remote.targets == ("fleet.toml",)


def test_parse_config_text_reads_no_dropins(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "10-x.toml", comp())
    config = parse_config_text(comp(key="other"), path=str(tmp_path / "oneiricd.toml"))
    assert [c.key for c in config.components] == ["other"]
    assert config.files == (str(tmp_path / "oneiricd.toml"),)


def test_workflow_dag_accepted(tmp_path: Path) -> None:
    config = load_config(
        main_file(
            tmp_path,
            comp("task", "fetch")
            + comp("task", "store")
            + comp(
                "workflow",
                "etl",
                settings="""{ nodes = [
                    { id = "c", task = "store", after = ["a", "b"] },
                    { id = "a", task = "fetch", payload = { n = 1 } },
                    { id = "b", task = "fetch", after = ["a"] },
                ] }""".replace("\n", " "),
            ),
        )
    )
    assert config.components[2].settings["nodes"][0]["after"] == ["a", "b"]


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[deamon]\nsocket = 'x'\n")
    assert error.file == str(tmp_path / "oneiricd.toml")
    assert error.path == "deamon"
    assert error.detail == (
        "unknown key 'deamon'; allowed keys: "
        "include, daemon, component, selections, remote, requires, "
        "metrics"
    )


def test_metrics_textfile_is_resolved_and_must_be_a_prom_file(tmp_path: Path) -> None:
    config = load_config(main_file(tmp_path, '[metrics]\ntextfile = "node/oneiric.prom"\n'))
    assert config.metrics.textfile == str(tmp_path / "node" / "oneiric.prom")
    error = load_error(tmp_path, '[metrics]\ntextfile = "/var/lib/node/oneiric.txt"\n')
    assert error.path == "metrics.textfile" and "*.prom" in error.detail
    error = load_error(tmp_path, "[metrics]\nport = 9100\n")
    assert error.path == "metrics.port" and "allowed keys: textfile" in error.detail


def test_unknown_daemon_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[daemon]\nsockt = '/x'\n")
    assert error.path == "daemon.sockt"
    assert "unknown key 'sockt'" in str(error)
    assert "socket, socket_mode, admin_group" in str(error)


def test_unknown_component_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, comp() + comp(key="b", prority="3"))
    assert error.path == "component[1].prority"
    assert "unknown key 'prority'; allowed keys: domain, key, provider, factory, priority" in str(
        error
    )


def test_source_is_not_a_toml_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, comp(source='"/elsewhere"'))
    assert error.path == "component[0].source"
    assert "source" not in str(error).split("allowed keys:")[1]


def test_unknown_remote_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[remote]\nurl = "https://x/"\nrefesh = "5m"\n')
    assert error.path == "remote.refesh"


def test_unknown_workflow_node_key(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        comp("task", "t")
        + comp("workflow", "w", settings='{ nodes = [{ id = "a", task = "t", afer = [] }] }'),
    )
    assert error.path == "component[1].settings.nodes[0].afer"
    assert "allowed keys: id, task, after, payload" in str(error)


# --------------------------------------------------------------------------- wrong types


def test_wrong_type_names_file_path_and_expectation(tmp_path: Path) -> None:
    error = load_error(tmp_path, comp() + comp(key="b", priority='"high"'))
    assert error.file == str(tmp_path / "oneiricd.toml")
    assert (error.path, error.detail) == ("component[1].priority", "expected int, got str")
    # the rendered message carries all three, in errors.ConfigError's format
    assert all(part in str(error) for part in (str(error.file), str(error.path), error.detail))


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ({"priority": "true"}, "component[0].priority", "expected int, got bool"),
        ({"topics": '["a", 1]'}, "component[0].topics[1]", "expected str, got int"),
        ({"settings": "3"}, "component[0].settings", "expected table, got int"),
        ({"concurrency": '"x"'}, "component[0].concurrency", "expected int, got str"),
        ({"stack_level": "1.5"}, "component[0].stack_level", "expected int, got float"),
        ({"priority": "1979-05-27"}, "component[0].priority", "expected int, got date"),
    ],
)
def test_wrong_component_types(
    tmp_path: Path, extra: dict[str, str], path: str, message: str
) -> None:
    domain = "event" if "topics" in extra or "concurrency" in extra else "adapter"
    error = load_error(tmp_path, comp(domain, **extra))
    assert (error.path, error.detail) == (path, message)


def test_missing_required_component_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[[component]]\ndomain = "adapter"\nkey = "a"\nprovider = "p"\n')
    assert (error.path, error.detail) == ("component[0]", "missing required key 'factory'")


def test_component_entry_not_a_table(tmp_path: Path) -> None:
    error = load_error(tmp_path, "component = [1]\n")
    assert (error.path, error.detail) == ("component[0]", "expected a table, got int")


def test_component_as_single_table(tmp_path: Path) -> None:
    error = load_error(tmp_path, comp().replace("[[component]]", "[component]"))
    assert error.path == "component"
    assert "expected an array of tables ([[component]]), got table" in str(error)


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("daemon = 5\n", "daemon", "expected a table, got int"),
        ("remote = []\n", "remote", "expected a table, got array"),
        ("selections = 1\n", "selections", "expected a table, got int"),
        ("[selections]\nadapter = 'x'\n", "selections.adapter", "expected a table, got str"),
        ("[daemon]\nadmin_group = 5\n", "daemon.admin_group", "expected str, got int"),
        ("[daemon]\nwatch = 'yes'\n", "daemon.watch", "expected bool, got str"),
        ("[daemon]\nsocket = ''\n", "daemon.socket", "expected a non-empty path"),
        ("include = 'conf.d/*.toml'\n", "include", "expected array, got str"),
        ("include = [1]\n", "include[0]", "expected str, got int"),
        ("[remote]\nurl = 5\n", "remote.url", "expected str, got int"),
        ("[remote]\nurl = 'https://x/'\n", "remote", "missing required key 'root'"),
        ("[remote]\nroot = 'r.json'\n", "remote", "missing required key 'url'"),
        ("[remote]\nurl = 'ftp://x/'\nroot = 'r'\n", "remote.url", "http:// or https://"),
        ("[remote]\nurl = 'https:///x'\nroot = 'r'\n", "remote.url", "with a host"),
        (
            "[remote]\nurl = 'https://x/'\nroot = 'r'\nmax_bytes = '4 lots'\n",
            "remote.max_bytes",
            'like "4MiB"',
        ),
        (
            "[remote]\nurl = 'https://x/'\nroot = 'r'\ntargets = []\n",
            "remote.targets",
            "at least one",
        ),
        (
            "[remote]\nurl = 'https://x/'\nroot = 'r'\ntargets = ['../etc/x']\n",
            "remote.targets",
            "target paths",
        ),
        (
            "[remote]\nurl = 'https://x/'\nroot = 'r'\nrefresh = '10m'\nrefresh_max = '1m'\n",
            "remote.refresh_max",
            "must not be shorter",
        ),
        (
            "[[component]]\ndomain = 'adapter'\nkey = 'k'\nprovider = 'p'\nfactory = 'a:B'\n"
            "artifact = 'x.whl'\n",
            "component[0].artifact",
            "only valid in remote manifests",
        ),
    ],
)
def test_wrong_section_types(tmp_path: Path, text: str, path: str, message: str) -> None:
    error = load_error(tmp_path, text)
    assert error.path == path
    assert message in error.detail


def test_remote_without_url(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[remote]\nrefresh = "1m"\n')
    assert (error.file, error.path) == (str(tmp_path / "oneiricd.toml"), "remote")
    assert error.detail == "missing required key 'url'"


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ('[daemon]\ndrain_timeout = "soon"\n', "daemon.drain_timeout", "expected a duration like"),
        ("[daemon]\nhealth_interval = 0\n", "daemon.health_interval", "greater than zero"),
        ('[daemon]\nidle_timeout = "-1s"\n', "daemon.idle_timeout", "must not be negative"),
        ('[remote]\nurl = "https://x/"\nrefresh = "5 min"\n', "remote.refresh", "a duration"),
        (comp("task", every='"0s"'), "component[0].every", "greater than zero"),
        (comp("task", every="true"), "component[0].every", "expected a duration like"),
    ],
)
def test_bad_durations(tmp_path: Path, text: str, path: str, message: str) -> None:
    error = load_error(tmp_path, text)
    assert error.path == path
    assert message in error.detail


@pytest.mark.parametrize("value", ['"0999"', '"rw-rw----"', "0o1777", "660", "true", "-1", '""'])
def test_bad_socket_mode(tmp_path: Path, value: str) -> None:
    error = load_error(tmp_path, f"[daemon]\nsocket_mode = {value}\n")
    assert error.path == "daemon.socket_mode"
    assert 'expected an octal file mode like "0660"' in error.detail


def test_bad_log_level(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[daemon]\nlog_level = "verbose"\n')
    assert error.path == "daemon.log_level"
    assert error.detail == "expected one of debug, info, warning, error, got 'verbose'"


def test_unknown_component_domain(tmp_path: Path) -> None:
    error = load_error(tmp_path, comp("adaptor"))
    assert error.path == "component[0].domain"
    assert error.detail == (
        "unknown domain 'adaptor'; expected one of adapter, service, task, event, workflow"
    )


def test_unknown_selections_domain(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[selections.adaptor]\ncache = "memory"\n')
    assert error.path == "selections.adaptor"
    assert "unknown domain 'adaptor'" in error.detail


@pytest.mark.parametrize("provider", ["5", '"bad name"', '""'])
def test_bad_selection_provider(tmp_path: Path, provider: str) -> None:
    error = load_error(tmp_path, f"[selections.adapter]\ncache = {provider}\n")
    assert error.path == "selections.adapter.cache"
    assert "expected a provider name" in error.detail


def test_bad_selection_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[selections.adapter]\n"my cache" = "memory"\n')
    assert error.path == "selections.adapter"
    assert error.detail == "expected a key of letters, digits, '_', '.' or '-', got 'my cache'"


def test_selection_of_a_provider_no_candidate_offers_is_an_error(tmp_path: Path) -> None:
    """A typo (`redis` for a key served by memory and sqlite) used to be ignored silently."""
    main_file(tmp_path, comp(provider="memory") + comp(provider="sqlite"))
    dropin = write(tmp_path / "conf.d" / "50-sel.toml", '[selections.adapter]\ncache = "redis"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "oneiricd.toml")
    error = info.value
    assert (error.file, error.path) == (str(dropin), "selections.adapter.cache")
    assert "'redis'" in error.detail and "its candidates are memory, sqlite" in error.detail


def test_selection_of_a_key_without_candidates_is_an_error(tmp_path: Path) -> None:
    error = load_error(tmp_path, comp() + '[selections.task]\ntick = "x"\n')
    assert error.path == "selections.task.tick"
    assert "no [[component]] serves task/tick" in error.detail


def test_selection_expected_from_remote_is_a_warning(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        comp(provider="memory") + '[selections.adapter]\ncache = "redis"\n'
        '[remote]\nurl = "https://fleet.example/"\nroot = "/etc/oneiric/root.json"\n',
    )
    config = load_config(path)
    assert config.selections == {"adapter": {"cache": "redis"}}
    (warning,) = config.warnings
    assert warning.startswith("selections.adapter.cache: provider 'redis' is not declared")
    assert "remote manifest" in warning


def test_valid_selection_has_no_warning(tmp_path: Path) -> None:
    config = load_config(main_file(tmp_path, comp() + '[selections.adapter]\ncache = "memory"\n'))
    assert config.warnings == ()


@pytest.mark.parametrize(
    "factory", ["pkg.mod", "pkg.mod:", ":Factory", "pkg mod:F", "pkg.mod:F:G", "1pkg:F", "a..b:F"]
)
def test_malformed_factory(tmp_path: Path, factory: str) -> None:
    text = comp().replace('"pkg.mod:Factory"', f'"{factory}"')
    error = load_error(tmp_path, text)
    assert error.path == "component[0].factory"
    assert 'expected an import path "package.module:attr"' in error.detail


@pytest.mark.parametrize(("field", "value"), [("key", "a/b"), ("provider", "p q"), ("key", "")])
def test_bad_names(tmp_path: Path, field: str, value: str) -> None:
    error = load_error(tmp_path, comp(**{field: value}))
    assert error.path == f"component[0].{field}"
    assert error.detail == f"expected letters, digits, '_', '.' or '-', got {value!r}"


@pytest.mark.parametrize(
    ("domain", "extra", "field", "allowed"),
    [
        ("adapter", {"every": '"5s"'}, "every", "task"),
        ("task", {"topics": '["a.*"]'}, "topics", "event"),
        ("service", {"queue_size": "10"}, "queue_size", "event"),
        ("adapter", {"concurrency": "2"}, "concurrency", "task or event or workflow"),
    ],
)
def test_domain_only_fields(
    tmp_path: Path, domain: str, extra: dict[str, str], field: str, allowed: str
) -> None:
    error = load_error(tmp_path, comp(domain, **extra))
    assert error.path == f"component[0].{field}"
    assert error.detail == f"only valid for {allowed} components, not {domain}"


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"concurrency": "0"}, "component[0].concurrency"),
        ({"queue_size": "0"}, "component[0].queue_size"),
        ({"topics": '["ok", ""]'}, "component[0].topics[1]"),
    ],
)
def test_event_limits(tmp_path: Path, extra: dict[str, str], path: str) -> None:
    assert load_error(tmp_path, comp("event", **extra)).path == path


def test_duplicate_component_in_one_file(tmp_path: Path) -> None:
    error = load_error(tmp_path, comp() + comp(key="x") + comp())
    assert error.path == "component[2]"
    assert error.detail == (
        "duplicate component (adapter/cache provider memory); first defined at component[0]"
    )


def test_same_component_in_two_files_is_two_sources(tmp_path: Path) -> None:
    path = main_file(tmp_path, comp())
    write(tmp_path / "conf.d" / "a.toml", comp())
    config = load_config(path)
    assert [c.source for c in config.components] == [str(path), str(tmp_path / "conf.d/a.toml")]


# --------------------------------------------------------------------------- files


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[daemon]\nsocket = "/x"\nadmin_group oneiric\n')
    assert error.file == str(tmp_path / "oneiricd.toml")
    assert error.detail.startswith("invalid TOML: ")
    assert "line 3" in error.detail


def test_missing_main_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    error = info.value
    assert (error.file, error.path) == (str(tmp_path / "nope.toml"), None)
    assert error.detail == "config file does not exist"


def test_unreadable_main_file(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="cannot read config file: Is a directory"):
        load_config(tmp_path / "dir.toml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "oneiricd.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(byte 5\)"):
        load_config(path)


def test_relative_path_argument_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main_file(tmp_path, comp())
    monkeypatch.chdir(tmp_path)
    config = load_config("oneiricd.toml")
    assert config.path == str(tmp_path / "oneiricd.toml")
    assert config.components[0].source == config.path


# --------------------------------------------------------------------------- drop-ins


def test_dropins_merge_in_lexical_order(tmp_path: Path) -> None:
    path = main_file(
        tmp_path,
        """
        [daemon]
        drain_timeout = "10s"
        admin_group = "main"
        [selections.adapter]
        cache = "memory"
        db = "sqlite"
        [remote]
        url = "https://a/"
        root = "/etc/oneiric/root.json"
        refresh = "2m"
        """
        + comp(provider="memory"),
    )
    write(
        tmp_path / "conf.d" / "20-late.toml",
        '[daemon]\ndrain_timeout = "20s"\n[selections.adapter]\ncache = "late"\n'
        '[remote]\nurl = "https://b/"\n' + comp(provider="late") + comp(provider="late2"),
    )
    write(
        tmp_path / "conf.d" / "10-early.toml",
        '[daemon]\ndrain_timeout = "15s"\nstop_timeout = "1s"\n'
        '[selections.task]\ntick = "x"\n' + comp(provider="early"),
    )
    write(tmp_path / "conf.d" / "notes.txt", "not toml")
    write(tmp_path / "conf.d" / ".hidden.toml", "garbage =")
    (tmp_path / "conf.d" / "dir.toml").mkdir()
    config = load_config(path)
    early, late = tmp_path / "conf.d" / "10-early.toml", tmp_path / "conf.d" / "20-late.toml"
    assert config.files == (str(path), str(early), str(late))
    assert [(c.provider, c.source) for c in config.components] == [
        ("memory", str(path)),
        ("early", str(early)),
        ("late", str(late)),
        ("late2", str(late)),
    ]
    assert config.daemon.drain_timeout == 20.0  # later wins
    assert config.daemon.stop_timeout == 1.0  # untouched by later files
    assert config.daemon.admin_group == "main"
    assert config.selections == {
        "adapter": {"cache": "late", "db": "sqlite"},
        "task": {"tick": "x"},
    }
    assert config.remote is not None
    assert (config.remote.url, config.remote.refresh) == ("https://b/", 120.0)


def test_error_in_dropin_names_dropin_and_its_own_index(tmp_path: Path) -> None:
    main_file(tmp_path, comp() + comp(key="b"))
    dropin = write(tmp_path / "conf.d" / "10-x.toml", comp(key="c") + comp(key="d", priority='"1"'))
    error = load_error(tmp_path, (tmp_path / "oneiricd.toml").read_text())
    assert (error.file, error.path) == (str(dropin), "component[1].priority")
    assert error.detail == "expected int, got str"


def test_syntax_error_in_dropin_names_dropin(tmp_path: Path) -> None:
    dropin = write(tmp_path / "conf.d" / "10-x.toml", "[[component]\n")
    error = load_error(tmp_path, "")
    assert error.file == str(dropin)
    assert "line 1" in error.detail


def test_include_not_allowed_in_dropin(tmp_path: Path) -> None:
    dropin = write(tmp_path / "conf.d" / "10-x.toml", 'include = ["more/*.toml"]\n')
    error = load_error(tmp_path, "")
    assert (error.file, error.path) == (str(dropin), "include")
    assert "only allowed in the main config file" in error.detail


def test_include_glob_relative_to_main_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    path = write(etc / "main.toml", 'include = ["extra/*.conf", "/nonexistent/*.toml"]\n')
    write(etc / "extra" / "a.conf", comp(provider="extra"))
    write(etc / "conf.d" / "a.toml", comp(provider="ignored"))  # default glob replaced
    elsewhere = tmp_path / "cwd"
    write(elsewhere / "extra" / "b.conf", comp(provider="wrong"))
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert config.include == ("extra/*.conf", "/nonexistent/*.toml")
    assert [c.provider for c in config.components] == ["extra"]


def test_include_matching_main_file_does_not_read_it_twice(tmp_path: Path) -> None:
    path = main_file(tmp_path, 'include = ["*.toml"]\n' + comp())
    write(tmp_path / "z.toml", comp(provider="z"))
    config = load_config(path)
    assert config.files == (str(path), str(tmp_path / "z.toml"))


def test_empty_include_disables_dropins(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "a.toml", comp())
    assert load_config(main_file(tmp_path, "include = []\n")).components == ()


def test_remote_only_in_dropin(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "a.toml", '[remote]\nurl = "https://x/"\nroot = "/r.json"\n')
    config = load_config(main_file(tmp_path))
    assert config.remote is not None
    assert config.remote.url == "https://x/"


# --------------------------------------------------------------------------- workflows


def workflow(nodes: str, *tasks: str) -> str:
    return "".join(comp("task", t) for t in tasks) + comp(
        "workflow", "flow", settings=f"{{ nodes = {nodes} }}"
    )


@pytest.mark.parametrize(
    ("nodes", "path", "message"),
    [
        (
            '[{id="a", task="t"}, {id="a", task="t"}]',
            "component[1].settings.nodes[1].id",
            "duplicate node id 'a'; first used at nodes[0]",
        ),
        (
            '[{id="a", task="nope"}]',
            "component[1].settings.nodes[0].task",
            "node 'a': no task component has key 'nope' (task keys: t)",
        ),
        (
            '[{id="a", task="t"}, {id="b", task="t", after=["a", "zz"]}]',
            "component[1].settings.nodes[1].after[1]",
            "node 'b': 'after' names unknown node id 'zz' (node ids: a, b)",
        ),
        (
            '[{id="x", task="t"}, {id="a", task="t", after=["c"]}, {id="b", task="t", '
            'after=["a", "x"]}, {id="c", task="t", after=["b"]}]',
            "component[1].settings.nodes[1].after",
            "nodes 'a', 'c', 'b' form a cycle: a -> c -> b -> a (each waits for the next)",
        ),
        (
            '[{id="c", task="t", after=["b"]}, {id="a", task="t", after=["c"]}, '
            '{id="b", task="t", after=["a"]}]',
            "component[1].settings.nodes[0].after",
            "nodes 'c', 'b', 'a' form a cycle: c -> b -> a -> c (each waits for the next)",
        ),
        (
            '[{id="a", task="t", after=["a"]}]',
            "component[1].settings.nodes[0].after",
            "nodes 'a' form a cycle: a -> a (each waits for the next)",
        ),
        ('[{task="t"}]', "component[1].settings.nodes[0]", "missing required key 'id'"),
        ('[{id="a", task=1}]', "component[1].settings.nodes[0].task", "non-empty string, got 1"),
        ('[{id="", task="t"}]', "component[1].settings.nodes[0].id", "non-empty string, got ''"),
        ('[{id="a", task="t", after="b"}]', "component[1].settings.nodes[0].after", "array"),
        ('[{id="a", task="t", after=[1]}]', "component[1].settings.nodes[0].after[0]", "str"),
        ("[1]", "component[1].settings.nodes[0]", "expected a table, got int"),
        ('"a"', "component[1].settings.nodes", "expected an array of node tables, got str"),
    ],
)
def test_workflow_errors(tmp_path: Path, nodes: str, path: str, message: str) -> None:
    error = load_error(tmp_path, workflow(nodes, "t"))
    assert error.path == path
    assert message in error.detail


def test_workflow_no_tasks_at_all(tmp_path: Path) -> None:
    error = load_error(tmp_path, workflow('[{id="a", task="t"}]'))
    assert "(task keys: none)" in error.detail


def test_workflow_sees_tasks_of_other_files_and_names_its_own_file(tmp_path: Path) -> None:
    main_file(tmp_path, comp("task", "fetch"))
    dropin = write(
        tmp_path / "conf.d" / "50-flow.toml",
        workflow('[{id="a", task="fetch"}, {id="b", task="store", after=["a"]}]'),
    )
    error = load_error(tmp_path, (tmp_path / "oneiricd.toml").read_text())
    assert (error.file, error.path) == (str(dropin), "component[0].settings.nodes[1].task")
    write(tmp_path / "conf.d" / "60-store.toml", comp("task", "store"))
    config = load_config(tmp_path / "oneiricd.toml")
    assert [c.key for c in config.components] == ["fetch", "flow", "store"]


def test_nodes_outside_workflow_domain_are_not_checked(tmp_path: Path) -> None:
    config = load_config(main_file(tmp_path, comp(settings='{ nodes = "whatever" }')))
    assert config.components[0].settings == {"nodes": "whatever"}


def test_long_workflow_chain_without_recursion_limit(tmp_path: Path) -> None:
    count = sys.getrecursionlimit() + 100
    nodes = ", ".join(
        f'{{id="n{i}", task="t"' + (f', after=["n{i - 1}"]}}' if i else "}") for i in range(count)
    )
    config = load_config(main_file(tmp_path, workflow(f"[{nodes}]", "t")))
    assert len(config.components[1].settings["nodes"]) == count


# --------------------------------------------------------------------------- check_factories

BROKEN_MODULE = "raise RuntimeError('boom at import')\n"


def test_check_factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "mods" / "oneiric_broken_mod.py", BROKEN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    lines = [
        comp(key="a").replace("pkg.mod:Factory", "oneiric.config:load_config"),
        comp(key="b").replace("pkg.mod:Factory", "collections:OrderedDict.fromkeys"),
        comp(key="c").replace("pkg.mod:Factory", "oneiric_no_such_mod:X"),
        comp(key="d").replace("pkg.mod:Factory", "oneiric.config:NoSuchThing"),
        comp(key="e").replace("pkg.mod:Factory", "oneiric.config:DEFAULT_CONFIG"),
    ]
    path = main_file(tmp_path, "".join(lines))
    dropin = write(
        tmp_path / "conf.d" / "a.toml",
        comp(key="f").replace("pkg.mod:Factory", "oneiric_broken_mod:X"),
    )
    errors = check_factories(load_config(path))
    assert errors == [
        f"{path}: component[2] (adapter/c provider memory): cannot import "
        "'oneiric_no_such_mod:X': ModuleNotFoundError: No module named 'oneiric_no_such_mod'"
        " (is the package installed, or its directory on PYTHONPATH?)",
        f"{path}: component[3] (adapter/d provider memory): cannot import "
        "'oneiric.config:NoSuchThing': AttributeError: "
        "module 'oneiric.config' has no attribute 'NoSuchThing'",
        f"{path}: component[4] (adapter/e provider memory): cannot import "
        "'oneiric.config:DEFAULT_CONFIG': TypeError: "
        "'oneiric.config:DEFAULT_CONFIG' is a str, not a class or callable",
        f"{dropin}: component[0] (adapter/f provider memory): cannot import "
        "'oneiric_broken_mod:X': RuntimeError: boom at import",
    ]


def test_check_factories_all_good(tmp_path: Path) -> None:
    text = comp().replace("pkg.mod:Factory", "oneiric.config:DaemonConfig")
    assert check_factories(load_config(main_file(tmp_path, text))) == []


def test_resolve_factory() -> None:
    assert resolve_factory("oneiric.config:DaemonConfig") is DaemonConfig
    assert resolve_factory("os.path:join") is os.path.join
    for bad in ("os.path", ":join", "os.path:"):
        with pytest.raises(ValueError, match=r'expected "package\.module:attr"'):
            resolve_factory(bad)


# --------------------------------------------------------------------------- watch_paths


def test_watch_paths_for_missing_conf_d(tmp_path: Path) -> None:
    path = main_file(tmp_path)
    paths = watch_paths(load_config(path), str(path))
    assert paths == [str(tmp_path), str(tmp_path / "conf.d")]  # ancestor == main dir: deduped


def test_watch_paths_deep_missing_glob_dir(tmp_path: Path) -> None:
    path = str(tmp_path / "etc" / "main.toml")
    (tmp_path / "etc").mkdir()
    # parse only: loading would read whatever /*.toml matches on this machine
    config = parse_config_text('include = ["a/b/*.toml", "/*.toml"]\n', path=path)
    paths = watch_paths(config, path)
    assert paths == [str(tmp_path / "etc"), str(tmp_path / "etc" / "a" / "b"), "/"]


def test_watch_paths_wildcard_directory_and_existing_dir(tmp_path: Path) -> None:
    path = main_file(tmp_path, 'include = ["hosts/*/x.toml", "conf.d/*.toml", "extra.toml"]\n')
    (tmp_path / "hosts").mkdir()
    (tmp_path / "conf.d").mkdir()
    paths = watch_paths(load_config(path), str(path))
    assert paths == [str(tmp_path), str(tmp_path / "hosts"), str(tmp_path / "conf.d")]


def test_watch_paths_missing_dir_outside_main_dir(tmp_path: Path) -> None:
    path = main_file(tmp_path / "etc", f'include = ["{tmp_path}/srv/drop/*.toml"]\n')
    paths = watch_paths(load_config(path), str(path))
    assert paths == [str(tmp_path / "etc"), str(tmp_path / "srv" / "drop"), str(tmp_path)]


def test_watch_paths_without_config_reads_include_best_effort(tmp_path: Path) -> None:
    path = main_file(tmp_path, 'include = ["extra/*.toml"]\n[daemon]\nbogus = 1\n')
    with pytest.raises(ConfigError):
        load_config(path)
    assert watch_paths(None, str(path)) == [str(tmp_path), str(tmp_path / "extra")]


@pytest.mark.parametrize("text", ["include = [", "include = 5\n", None])
def test_watch_paths_without_config_falls_back_to_default(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "oneiricd.toml"
    if text is not None:
        path.write_text(text)
    assert watch_paths(None, str(path)) == [str(tmp_path), str(tmp_path / "conf.d")]


# --------------------------------------------------------------------------- default_paths


@pytest.mark.parametrize(
    ("flags", "daemon", "environ", "expected"),
    [
        (
            {},
            None,
            {},
            (
                "/etc/oneiric/oneiricd.toml",
                "/run/oneiric/oneiricd.sock",
                "/run/oneiric/health.json",
                "/var/lib/oneiric",
            ),
        ),
        (
            {},
            None,
            {
                "ONEIRIC_CONFIG": "/env/c.toml",
                "RUNTIME_DIRECTORY": "/run/a:/run/b",
                "STATE_DIRECTORY": "/st/a:/st/b",
            },
            ("/env/c.toml", "/run/a/oneiricd.sock", "/run/a/health.json", "/st/a"),
        ),
        (
            {},
            DaemonConfig(socket="/d/s.sock", health_file="/d/h.json", state_dir="/d/state"),
            {"RUNTIME_DIRECTORY": "/run/a", "STATE_DIRECTORY": "/st/a"},
            ("/etc/oneiric/oneiricd.toml", "/d/s.sock", "/d/h.json", "/d/state"),
        ),
        (
            {
                "config": "/f/c.toml",
                "socket": "/f/s.sock",
                "health_file": "/f/h.json",
                "state_dir": "/f/state",
            },
            DaemonConfig(socket="/d/s.sock", health_file="/d/h.json", state_dir="/d/state"),
            {"ONEIRIC_CONFIG": "/env/c.toml", "RUNTIME_DIRECTORY": "/run/a"},
            ("/f/c.toml", "/f/s.sock", "/f/h.json", "/f/state"),
        ),
        (
            {},
            None,
            {"ONEIRIC_CONFIG": "", "RUNTIME_DIRECTORY": "", "STATE_DIRECTORY": ":/st/b"},
            (
                "/etc/oneiric/oneiricd.toml",
                "/run/oneiric/oneiricd.sock",
                "/run/oneiric/health.json",
                "/st/b",
            ),
        ),
    ],
)
def test_default_paths_precedence(
    flags: dict[str, str],
    daemon: DaemonConfig | None,
    environ: dict[str, str],
    expected: tuple[str, str, str, str],
) -> None:
    args: dict[str, str | None] = {"config": None, "socket": None, "state_dir": None}
    args["health_file"] = None
    args.update(flags)
    resolved = default_paths(**args, daemon=daemon, environ=environ)
    assert resolved == ResolvedPaths(*expected)


def test_default_paths_makes_relative_flags_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    resolved = default_paths(
        config="c.toml", socket="s.sock", state_dir=None, health_file=None, daemon=None, environ={}
    )
    assert (resolved.config, resolved.socket) == (
        str(tmp_path / "c.toml"),
        str(tmp_path / "s.sock"),
    )


def test_health_file_follows_a_moved_socket() -> None:
    """oneiricctl --socket X looks for X's directory/health.json when the daemon is down."""
    resolved = default_paths(
        config=None,
        socket="/srv/o/o.sock",
        state_dir=None,
        health_file=None,
        daemon=None,
        environ={"RUNTIME_DIRECTORY": "/run/oneiric"},
    )
    assert resolved.health_file == "/srv/o/health.json"
    explicit = default_paths(
        config=None,
        socket="/srv/o/o.sock",
        state_dir=None,
        health_file="/h.json",
        daemon=None,
        environ={},
    )
    assert explicit.health_file == "/h.json"
