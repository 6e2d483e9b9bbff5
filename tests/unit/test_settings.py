"""Settings: sources, validation that names the bad field, and the generated docs table."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import FLAT_NAMES, SECTIONS, Settings, env_names, load_settings, section_fields
from core.settings_docs import END_MARKER, START_MARKER, replace_table, settings_table

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_default(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.engine.mode == "embedded"
    assert settings.resolved_engine_urls == [f"http://127.0.0.1:{settings.engine.port}"]
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.resolved_base_model_path == tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert settings.auth.enabled


def test_env_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "loragate.toml"
    config.write_text('port = 9000\nmax_loras = 2\nlog_format = "text"\n')
    monkeypatch.setenv("LORAGATE_PORT", "9100")
    settings = load_settings(config)
    assert settings.port == 9100  # env wins
    assert settings.model.max_loras == 2  # from the file
    assert settings.logging.format == "text"


def test_engine_urls_accept_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAGATE_ENGINE_MODE", "external")
    monkeypatch.setenv("LORAGATE_ENGINE_URLS", "http://a:8000/v1, http://b:8000/")
    assert load_settings().resolved_engine_urls == ["http://a:8000", "http://b:8000"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"port": 70000}, "port"),
        ({"engine_mode": "sideways"}, "engine_mode"),
        ({"engine_mode": "external"}, "engine_urls"),
        ({"engine_mode": "external", "engine_urls": "ftp://x"}, "engine_urls"),
        ({"max_loras": 8, "max_cpu_loras": 4}, "max_cpu_loras"),
        ({"workers": 4}, "workers"),
        ({"not_a_setting": 1}, "not_a_setting"),
        ({"max_body_bytes": "lots"}, "max_body_bytes"),
        # Settings of a section: named flat and by their environment variable.
        ({"train_learning_rate": 2}, "LORAGATE_TRAIN_LEARNING_RATE"),
        ({"train_max_example_tokens": 1}, "LORAGATE_TRAIN_MAX_EXAMPLE_TOKENS"),
        ({"train_rank": 64}, "LORAGATE_TRAIN_RANK"),  # over max_lora_rank
        ({"train": {"dropout": 1.5}}, "LORAGATE_TRAIN_DROPOUT"),  # given nested
        ({"monitor_window": "wide"}, "LORAGATE_MONITOR_WINDOW"),
        ({"rollout_steps": [10, 5, 100]}, "LORAGATE_ROLLOUT_STEPS"),
        ({"train_method": "full"}, "LORAGATE_TRAIN_METHOD"),
        ({"train_no_such_thing": 1}, "train_no_such_thing"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)  # type: ignore[arg-type]
    assert field in str(caught.value)


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_configuration_doc_holds_the_current_table() -> None:
    document = (REPO / "docs" / "configuration.md").read_text()
    assert settings_table() in document, "run `make docs` to regenerate docs/configuration.md"
    assert replace_table(document) == document


def test_replace_table_needs_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        replace_table("no markers here")
    assert settings_table() in replace_table(f"# t\n{START_MARKER}\nold\n{END_MARKER}\n")


def test_flat_names_fill_the_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment, TOML and keywords keep the flat names; each lands in its section, and the
    usual priority (keyword, environment, file) holds setting by setting."""
    config = tmp_path / "loragate.toml"
    config.write_text("train_rank = 4\ntrain_alpha = 8\n[monitor]\nwindow = 60\n")
    monkeypatch.setenv("LORAGATE_TRAIN_ALPHA", "12")
    monkeypatch.setenv("LORAGATE_TRAIN_TARGET_MODULES", "q_proj, v_proj")
    monkeypatch.setenv("LORAGATE_ROLLOUT_STEPS", "20,100")
    monkeypatch.setenv("LORAGATE_EVAL_MARGIN", "0.2")
    settings = load_settings(config, train_learning_rate=1e-3, trainer_auto_rollout=False)
    assert settings.train.rank == 4  # file
    assert settings.train.alpha == 12  # environment over file
    assert settings.train.learning_rate == 1e-3  # keyword
    assert settings.train.target_modules == ("q_proj", "v_proj")
    assert settings.rollout.steps == (20, 100)
    assert settings.evaluation.margin == 0.2
    assert settings.monitor.window == 60  # a nested TOML table
    assert settings.trainer.auto_rollout is False
    assert settings.curation == type(settings.curation)()  # untouched sections: defaults


def test_every_setting_has_one_env_name_and_a_description() -> None:
    names = env_names()
    assert len(names) == len(set(names))
    for flat, (section, field) in FLAT_NAMES.items():
        assert flat not in Settings.model_fields, flat
        info = section_fields(SECTIONS[section])[field]
        assert info.description, f"{section}.{field} ({flat}) has no description"
        assert f"`LORAGATE_{flat.upper()}`" in settings_table()


# The flat names of the section settings, as operators, deploy/ and the docs know them from
# before the sections (and the fields added since): a section field renamed must keep its
# name through ``ENV_NAMES``.
FLAT_NAMES_BEFORE_THE_SECTIONS = [
    "adapter_drain_s",
    "adapter_publish_roots",
    "adapter_wait_s",
    "auth_enabled",
    "base_model_name",
    "base_model_path",
    "chunk_overlap_tokens",
    "chunk_tokens",
    "compressed_index_min_vectors",
    "database_url",
    "default_max_tokens",
    "embedding_backend",
    "embedding_batch_size",
    "embedding_model_path",
    "embedding_threads",
    "engine_api_key",
    "engine_chat_template",
    "engine_connect_timeout_s",
    "engine_discovery_interval_s",
    "engine_extra_args",
    "engine_health_interval_s",
    "engine_host",
    "engine_max_connections",
    "engine_mode",
    "engine_port",
    "engine_request_timeout_s",
    "engine_restart_backoff_max_s",
    "engine_restart_backoff_s",
    "engine_start_timeout_s",
    "engine_tool_call_parser",
    "engine_urls",
    "eval_concurrency",
    "eval_margin",
    "eval_max_tokens",
    "eval_probe_tolerance",
    "exact_index_max_vectors",
    "experiment_alpha",
    "experiment_max_duration_s",
    "experiment_max_samples",
    "experiment_min_samples",
    "experiment_tau",
    "faiss_threads",
    "flag_rules",
    "flag_rules_by_alias",
    "gpu_memory_utilization",
    "index_rerank_factor",
    "index_sq_bits",
    "ivf_nprobe",
    "journal_dir",
    "journal_fsync",
    "key_cache_seconds",
    "kv_cache_gib",
    "log_format",
    "log_level",
    "max_adapter_bytes",
    "max_body_bytes",
    "max_cpu_loras",
    "max_document_bytes",
    "max_header_bytes",
    "max_lora_rank",
    "max_loras",
    "max_messages",
    "max_model_len",
    "max_n",
    "monitor_drift_min_distance",
    "monitor_drift_p_value",
    "monitor_interval_s",
    "monitor_kpi_sample",
    "monitor_kpi_window_s",
    "monitor_max_idk_rate",
    "monitor_min_feedback",
    "monitor_min_positive_ratio",
    "monitor_min_queries",
    "monitor_permutations",
    "monitor_retention_days",
    "monitor_window",
    "openapi_pages",
    "quota_backend",
    "quota_default_concurrent_streams",
    "quota_default_feedback_per_minute",
    "quota_default_monthly_tokens",
    "quota_default_requests_per_minute",
    "quota_default_searches_per_minute",
    "quota_default_tokens_per_minute",
    "quota_reserve_max_tokens",
    "quota_usage_refresh_s",
    "reconcile_interval_s",
    "redis_url",
    "reeval_interval_s",
    "reeval_min_holdout",
    "reeval_tolerance",
    "retrieval_chunk_cache_size",
    "retrieval_min_score",
    "retrieval_models",
    "retrieval_query_batch_size",
    "retrieval_query_batch_wait_ms",
    "retrieval_query_cache_size",
    "retrieval_top_k",
    "review_trust_corrections",
    "rollout_failure_threshold",
    "rollout_interval_s",
    "rollout_max_error_rate_increase",
    "rollout_max_groundedness_drop",
    "rollout_max_negative_rate_increase",
    "rollout_max_p95_latency_ratio",
    "rollout_min_samples",
    "rollout_steps",
    "train_alpha",
    "train_batch_size",
    "train_checkpoint_every",
    "train_compute_dtype",
    "train_device",
    "train_dropout",
    "train_epochs",
    "train_eval_every",
    "train_holdout_fraction",
    "train_learning_rate",
    "train_max_example_tokens",
    "train_max_reply_chars",
    "train_max_steps",
    "train_method",
    "train_min_examples",
    "train_near_duplicate_similarity",
    "train_optimizer",
    "train_paraphrases",
    "train_patience",
    "train_rank",
    "train_recipe",
    "train_rehearsal_fraction",
    "train_rewrites",
    "train_target_modules",
    "train_threads",
    "train_validation_fraction",
    "trainer_auto_rollout",
    "trainer_min_new_examples",
    "trainer_monitor_min_new_examples",
    "trainer_on_monitor",
    "trainer_poll_s",
    "trainer_schedule_s",
    "ui_enabled",
]


def test_the_flat_names_from_before_the_sections_still_work() -> None:
    # Every name from before works; settings added since have flat names of their own.
    assert not set(FLAT_NAMES_BEFORE_THE_SECTIONS) - set(FLAT_NAMES)
    for name in FLAT_NAMES_BEFORE_THE_SECTIONS:
        section, field = FLAT_NAMES[name]
        default = getattr(getattr(Settings(), section), field)
        assert getattr(getattr(Settings(**{name: default}), section), field) == default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read"),
        ("", "holds no probes"),
        ('{"prompt": "Say hi."}\n', "probe 1: write a JSON object"),
        ('{"prompt": "Say hi.", "expect": "hi"}\nnot json\n', "probe 2: write a JSON object"),
        ('{"prompt": "Say hi.", "expect": " "}\n', "probe 1"),
        ('{"prompt": "Say hi.", "expect": "hi", "also": "hello"}\n', "probe 1: also must be"),
        ('{"prompt": "Say hi.", "expect": "hi", "also": ["hello", ""]}\n', "also must be"),
    ],
)
def test_an_operators_probes_file_is_checked_when_the_settings_load(
    tmp_path: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "probes.jsonl"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(eval_probes_path=path)
    assert "LORAGATE_EVAL_PROBES_PATH" in str(caught.value) and message in str(caught.value)


def test_the_gate_asks_an_operators_probes_instead_of_the_shipped_ones(tmp_path: Path) -> None:
    from trainer.evaluate import Probe, gate_probes, shipped_probes

    assert gate_probes(load_settings().evaluation) == shipped_probes()
    path = tmp_path / "probes.jsonl"
    path.write_text(
        '{"prompt": "Wie heisst die Hauptstadt von Frankreich?", "expect": "Paris"}\n'
        '{"prompt": "Was ist das Gegenteil von gross?", "expect": "klein", "also": ["winzig"]}\n'
    )
    assert gate_probes(load_settings(eval_probes_path=path).evaluation) == [
        Probe("Wie heisst die Hauptstadt von Frankreich?", "Paris"),
        Probe("Was ist das Gegenteil von gross?", "klein", also=("winzig",)),
    ]


def test_a_probe_set_too_small_for_the_tolerance_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fewer probes than 1 / tolerance: one flipped answer alone is more than the tolerance."""
    from core.probes import format_probes
    from trainer.evaluate import gate_probes, shipped_probes

    path = tmp_path / "probes.jsonl"
    path.write_text(format_probes(shipped_probes()[:19]))
    with caplog.at_level("WARNING", logger="loragate.eval"):
        gate_probes(load_settings(eval_probes_path=path).evaluation)  # 19 x 0.05 < 1
        assert [record.probes for record in caplog.records] == [19]  # type: ignore[attr-defined]
        caplog.clear()
        gate_probes(load_settings(eval_probes_path=path, eval_probe_tolerance=0.1).evaluation)
        path.write_text(format_probes(shipped_probes()[:20]))
        gate_probes(load_settings(eval_probes_path=path).evaluation)
    assert caplog.records == []


def test_probes_written_for_an_operator_read_back_the_same() -> None:
    from core.probes import format_probes, parse_probes
    from trainer.evaluate import shipped_probes

    probes = shipped_probes()
    assert any(probe.also for probe in probes) and any(not probe.also for probe in probes)
    assert parse_probes(format_probes(probes), "written") == probes
