"""FinConn registration: configuration read once and checked, several apps, app factories."""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_finconn import ConfigurationError, FinConn, Holder, get_state
from flask_finconn.testing import HOLDER_HEADER, create_app

REAL_KEYS = {
    "FINCONN_STRIPE_SECRET_KEY": "sk_test_core123",
    "FINCONN_STRIPE_PUBLISHABLE_KEY": "pk_test_core123",
    "FINCONN_WEBHOOK_SECRET": "whsec_core123",
    "FINCONN_MERCHANT_NAME": "Core Shop",
}


@pytest.fixture(autouse=True)
def no_stripe_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys in the developer's environment must not change what these tests see."""
    for name in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)


def host_app(**config: Any) -> tuple[Flask, SQLAlchemy, FinConn]:
    app = Flask("host")
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    app.config["FINCONN_MERCHANT_NAME"] = "Host shop"
    app.config.update(config)
    db = SQLAlchemy()
    db.init_app(app)
    finconn = FinConn(db=db)
    return app, db, finconn


def test_real_keys_mean_no_sandbox() -> None:
    app, _, finconn = host_app(**REAL_KEYS)
    finconn.init_app(app)
    state = get_state(app)
    assert state.sandbox is None
    assert state.settings.sandbox is False
    assert state.publishable_key == "pk_test_core123"
    assert state.settings.webhook_secrets == ("whsec_core123",)
    assert state.settings.livemode is False


def test_every_key_gets_its_default_in_config() -> None:
    app, _, finconn = host_app(**REAL_KEYS)
    finconn.init_app(app)
    assert app.config["FINCONN_PERMISSIONS"] == ["balances", "transactions"]
    assert app.config["FINCONN_URL_PREFIX"] == "/finconn"
    assert app.config["FINCONN_COUNTRY"] == "US"
    assert app.config["FINCONN_SUBSCRIBE_TRANSACTIONS"] is True


def test_keys_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_fromenv")
    monkeypatch.setenv("STRIPE_PUBLISHABLE_KEY", "pk_test_fromenv")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_one,whsec_two")
    app, _, finconn = host_app()
    finconn.init_app(app)
    settings = get_state(app).settings
    assert settings.sandbox is False
    assert settings.secret_key == "sk_test_fromenv"
    assert settings.webhook_secrets == ("whsec_one", "whsec_two")


def test_settings_are_read_once_at_init() -> None:
    app, _, finconn = host_app(**REAL_KEYS)
    finconn.init_app(app)
    app.config["FINCONN_PERMISSIONS"] = ["ownership"]
    assert get_state(app).settings.permissions == ("balances", "transactions")


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"FINCONN_SANDBOX": False}, "FINCONN_STRIPE_SECRET_KEY"),
        (
            {**REAL_KEYS, "FINCONN_STRIPE_SECRET_KEY": "sk_live_x", "FINCONN_WEBHOOK_SECRET": None},
            "FINCONN_WEBHOOK_SECRET",
        ),
        ({**REAL_KEYS, "FINCONN_STRIPE_SECRET_KEY": "pk_test_x"}, "FINCONN_STRIPE_SECRET_KEY"),
        ({**REAL_KEYS, "FINCONN_STRIPE_PUBLISHABLE_KEY": None}, "FINCONN_STRIPE_PUBLISHABLE_KEY"),
        ({**REAL_KEYS, "FINCONN_WEBHOOK_SECRET": "secret"}, "FINCONN_WEBHOOK_SECRET"),
        ({**REAL_KEYS, "FINCONN_PERMISSIONS": ["balances", "moods"]}, "FINCONN_PERMISSIONS"),
        ({**REAL_KEYS, "FINCONN_PERMISSIONS": []}, "FINCONN_PERMISSIONS"),
        ({**REAL_KEYS, "FINCONN_PREFETCH": ["ownership"]}, "FINCONN_PERMISSIONS"),
        ({**REAL_KEYS, "FINCONN_PREFETCH": ["balance"]}, "FINCONN_PREFETCH"),
        ({**REAL_KEYS, "FINCONN_ACCOUNT_SUBCATEGORIES": ["cash"]}, "FINCONN_ACCOUNT_SUBCATEGORIES"),
        ({**REAL_KEYS, "FINCONN_COUNTRY": "USA"}, "FINCONN_COUNTRY"),
        ({**REAL_KEYS, "FINCONN_URL_PREFIX": "finconn/"}, "FINCONN_URL_PREFIX"),
        ({**REAL_KEYS, "FINCONN_TASK_QUEUE": "rq"}, "FINCONN_TASK_QUEUE"),
        ({**REAL_KEYS, "FINCONN_MAX_CONTENT_LENGTH": 0}, "FINCONN_MAX_CONTENT_LENGTH"),
        ({**REAL_KEYS, "FINCONN_WEBHOOK_STORE_TIMEOUT": 0}, "FINCONN_WEBHOOK_STORE_TIMEOUT"),
        ({**REAL_KEYS, "FINCONN_WEBHOOK_STORE_TIMEOUT": "soon"}, "FINCONN_WEBHOOK_STORE_TIMEOUT"),
        # No wait takes forever (or centuries): a thread's wait refuses such a timeout.
        (
            {**REAL_KEYS, "FINCONN_WEBHOOK_STORE_TIMEOUT": float("inf")},
            "FINCONN_WEBHOOK_STORE_TIMEOUT",
        ),
        ({**REAL_KEYS, "FINCONN_WEBHOOK_STORE_TIMEOUT": 1e12}, "FINCONN_WEBHOOK_STORE_TIMEOUT"),
        ({**REAL_KEYS, "FINCONN_MERCHANT_NAME": None}, "FINCONN_MERCHANT_NAME"),
        ({**REAL_KEYS, "FINCONN_MERCHANT_NAME": ""}, "FINCONN_MERCHANT_NAME"),
    ],
)
def test_misconfiguration_says_what_to_set(config: dict[str, Any], names: str) -> None:
    app, _, finconn = host_app(**config)
    with pytest.raises(ConfigurationError, match=names) as info:
        finconn.init_app(app)
    message = str(info.value)
    assert message.endswith(".")
    assert "sk_live_x" not in message
    assert "finconn" not in app.extensions


def test_flask_sqlalchemy_must_come_first() -> None:
    app = Flask("host")
    finconn = FinConn(db=SQLAlchemy())
    with pytest.raises(ConfigurationError, match=r"db\.init_app"):
        finconn.init_app(app)


def test_the_apps_own_db_is_required() -> None:
    app, _, _ = host_app(**REAL_KEYS)
    with pytest.raises(ConfigurationError, match="same SQLAlchemy instance"):
        FinConn(db=SQLAlchemy()).init_app(app)


def test_double_registration_is_refused() -> None:
    app, _, finconn = host_app(**REAL_KEYS)
    finconn.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        finconn.init_app(app)


def test_one_extension_serves_several_apps_without_holding_them() -> None:
    db = SQLAlchemy()
    finconn = FinConn(db=db)
    apps = []
    for prefix in ("/one", "/two"):
        app = Flask("host")
        app.config.update(REAL_KEYS, SQLALCHEMY_DATABASE_URI="sqlite://", FINCONN_URL_PREFIX=prefix)
        db.init_app(app)
        finconn.init_app(app)
        apps.append(app)
    assert [get_state(app).settings.url_prefix for app in apps] == ["/one", "/two"]
    assert get_state(apps[0]).stripe is not get_state(apps[1]).stripe
    assert {r.rule for r in apps[1].url_map.iter_rules()} >= {"/two/accounts", "/two/sessions"}
    # Nothing the extension keeps refers to an app: dropped apps are collected.
    alive = [weakref.ref(each) for each in apps]
    del apps, app
    gc.collect()
    assert [ref() for ref in alive] == [None, None]
    assert finconn.db is db


def test_app_passed_to_constructor_is_initialised() -> None:
    app = Flask("host")
    app.config.update(REAL_KEYS, SQLALCHEMY_DATABASE_URI="sqlite://")
    db = SQLAlchemy(app)
    FinConn(app, db=db)
    assert get_state(app).db is db


def test_tables_are_added_to_the_hosts_metadata() -> None:
    _, db, _ = host_app()
    names = {name for name in db.metadata.tables if name.startswith("finconn_")}
    assert names == {
        "finconn_customer",
        "finconn_link_session",
        "finconn_account",
        "finconn_balance",
        "finconn_owner",
        "finconn_transaction",
        "finconn_webhook_event",
        "finconn_installation",
        "finconn_payment_method",
        "finconn_payment",
    }


def test_get_state_says_how_to_register() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        get_state(Flask("bare"))


def test_sandbox_mode_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_finconn"):
        app = create_app()
    assert get_state(app).sandbox is not None
    assert any("SANDBOX" in record.getMessage() for record in caplog.records)


def test_sandbox_is_the_default_without_keys(tmp_path: Any) -> None:
    app = Flask("host", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI="sqlite://")
    db = SQLAlchemy()
    db.init_app(app)
    FinConn(db=db).init_app(app)
    state = get_state(app)
    assert state.settings.sandbox is True
    assert state.sandbox is not None
    assert (tmp_path / "instance").is_dir()


def test_holder_must_be_a_holder() -> None:
    with pytest.raises(TypeError, match="non-empty string"):
        Holder(id="")


def test_routes_need_a_holder_loader() -> None:
    app, _, finconn = host_app(FINCONN_SANDBOX=True, FINCONN_SANDBOX_DATABASE=":memory:")
    finconn.init_app(app)
    response = app.test_client().get("/finconn/accounts")
    assert response.status_code == 500
    error = response.json["error"]  # type: ignore[index]
    assert error["code"] == "configuration_error"
    assert "@finconn.holder_loader" in error["message"]


def test_error_handlers_stay_on_the_blueprint() -> None:
    app = create_app()

    @app.get("/host-page")
    def host_page() -> str:
        from werkzeug.exceptions import NotFound

        raise NotFound()

    client = app.test_client()
    host = client.get("/host-page")
    assert host.status_code == 404
    assert host.mimetype == "text/html"
    ours = client.get("/finconn/accounts/fcacct_nope", headers={HOLDER_HEADER: "ada"})
    assert ours.status_code == 404
    assert ours.mimetype == "application/json"
    # Routing errors happen before a blueprint is chosen, so they stay the host's.
    assert client.get("/finconn/nowhere").mimetype == "text/html"


@pytest.mark.parametrize("key", ["sk_live_x", "rk_live_x"])
def test_a_live_key_never_runs_on_the_sandbox(key: str) -> None:
    app, _, finconn = host_app(
        **{**REAL_KEYS, "FINCONN_STRIPE_SECRET_KEY": key}, FINCONN_SANDBOX=True
    )
    with pytest.raises(ConfigurationError) as info:
        finconn.init_app(app)
    message = str(info.value)
    assert "live key" in message and "FINCONN_SANDBOX" in message and message.endswith(".")
    assert key not in message
    assert "finconn" not in app.extensions


def test_without_a_key_a_production_app_does_not_fall_back_to_the_sandbox() -> None:
    app, _, finconn = host_app(FINCONN_SANDBOX_DATABASE=":memory:")
    assert not (app.debug or app.testing)
    with pytest.raises(ConfigurationError) as info:
        finconn.init_app(app)
    message = str(info.value)
    assert "FINCONN_STRIPE_SECRET_KEY" in message and "FINCONN_SANDBOX = True" in message
    assert "finconn" not in app.extensions


@pytest.mark.parametrize(
    "config",
    [{"DEBUG": True}, {"TESTING": True}, {"FINCONN_SANDBOX": True}],
    ids=["debug", "testing", "explicit"],
)
def test_without_a_key_the_sandbox_runs_in_debug_testing_or_when_asked(
    config: dict[str, Any],
) -> None:
    app, _, finconn = host_app(FINCONN_SANDBOX_DATABASE=":memory:", **config)
    finconn.init_app(app)
    sandbox = get_state(app).sandbox
    assert sandbox is not None
    sandbox.stop_background()


def test_the_sandbox_names_a_merchant_a_person_would_write() -> None:
    app = create_app(FINCONN_MERCHANT_NAME=None)
    assert get_state(app).settings.merchant_name == "Sandbox merchant"
    named = create_app(FINCONN_MERCHANT_NAME="Acme Budget")
    assert get_state(named).settings.merchant_name == "Acme Budget"


def test_the_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    import flask_finconn

    assert flask_finconn.__version__ == version("flask-finconn")
    assert "__version__" in flask_finconn.__all__


def test_a_holder_id_longer_than_its_column_is_refused_with_a_sentence() -> None:
    Holder("x" * 255)
    with pytest.raises(ValueError, match="255"):
        Holder("x" * 256)
