"""Channel configuration in the stakeholder directory: well-formed or one clear error naming the
file and the key; secrets never written into it; the shipped directory works with nothing set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from engine.errors import LibraryError
from engine.library import load_library
from workflows.notifications import (
    Channel,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
)

LIBRARY = Path(__file__).resolve().parents[2] / "playbooks"
CHANNEL = TypeAdapter(Channel)


def directory(tmp_path: Path, text: str) -> Path:
    (tmp_path / "stakeholders.yaml").write_text(text)
    return tmp_path


def test_the_shipped_directory_delivers_by_webhook_first_everywhere() -> None:
    """A fresh machine has no SMTP relay or chat secrets: every stakeholder starts with the plain
    webhook to the notify connector, and nothing else is switched on."""
    stakeholders = load_library(LIBRARY).stakeholders
    assert stakeholders
    for name, stakeholder in stakeholders.items():
        assert [WebhookChannel()] == stakeholder.channels, name


def test_the_commented_examples_in_the_shipped_directory_are_valid(tmp_path: Path) -> None:
    """Uncommenting the examples gives a valid directory with every kind of channel."""
    text = (LIBRARY / "stakeholders.yaml").read_text()
    uncommented = re.sub(r"^    # ", "    ", text, flags=re.MULTILINE)
    stakeholders = load_library(directory(tmp_path, uncommented)).stakeholders
    kinds = {channel.type for s in stakeholders.values() for channel in s.channels}
    assert {"webhook", "email", "slack", "pagerduty"} == kinds
    assert ["webhook:notify-connector", "slack", "pagerduty"] == [
        channel.describe() for channel in stakeholders["internal-crisis-team"].channels
    ]


def test_a_stakeholder_without_channels_gets_the_connector_webhook(tmp_path: Path) -> None:
    library = load_library(directory(tmp_path, "legal:\n  name: Legal\n  kind: internal\n"))
    assert [WebhookChannel()] == library.stakeholders["legal"].channels


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (
            "    - type: email\n      to: [not-an-address]\n",
            "regulator.channels[0].to[0]: 'not-an-address' is not an e-mail address",
        ),
        (
            "    - type: email\n      to: []\n",
            "regulator.channels[0].to: List should have at least 1 item",
        ),
        (
            "    - type: sms\n      number: '+44 20 7946 0000'\n",
            "regulator.channels[0]: Input tag 'sms' found using 'type' does not match",
        ),
        (
            "    - type: slack\n      url_env: https://hooks.slack.com/services/T0/B0/XYZ\n",
            "regulator.channels[0].url_env: must name an environment variable",
        ),
        (
            "    - type: pagerduty\n      routing_key: R0UT1NG\n",
            "regulator.channels[0].routing_key_env: Field required",
        ),
        (
            "    - type: webhook\n      url: ftp://partner.example/hook\n",
            "regulator.channels[0].url: 'ftp://partner.example/hook' is not an http(s) URL",
        ),
        (
            "    - type: webhook\n      url: https://user:pw@partner.example/hook\n",
            "regulator.channels[0].url: the URL holds credentials",
        ),
    ],
    ids=[
        "address",
        "no-recipient",
        "unknown-type",
        "secret-inline",
        "key-inline",
        "scheme",
        "userinfo",
    ],
)
def test_a_malformed_channel_is_one_line_naming_file_and_key(
    tmp_path: Path, entry: str, error: str
) -> None:
    text = "regulator:\n  name: Regulator\n  kind: external\n  channels:\n" + entry
    with pytest.raises(LibraryError) as raised:
        load_library(directory(tmp_path, text))
    message = str(raised.value)
    assert "\n" not in message
    # At the line of the key (or list item) that is wrong: the entry's, for an unknown type.
    at = re.escape(str(tmp_path / "stakeholders.yaml"))
    assert re.match(rf"{at}:(5|6):[0-9]+: {re.escape(error)}", message), message


def test_a_secret_written_inline_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    text = (
        "ops:\n  name: Ops\n  kind: internal\n  channels:\n"
        "    - type: slack\n      url_env: https://hooks.slack.com/services/T0/B0/s3cr3tT0ken\n"
    )
    with pytest.raises(LibraryError) as raised:
        load_library(directory(tmp_path, text))
    assert "s3cr3tT0ken" not in str(raised.value)


def test_an_empty_channel_list_is_refused(tmp_path: Path) -> None:
    """Nobody would be told: an empty list is a mistake, not a way to mute a stakeholder."""
    text = "legal:\n  name: Legal\n  kind: internal\n  channels: []\n"
    with pytest.raises(LibraryError, match=r"legal\.channels: List should have at least 1 item"):
        load_library(directory(tmp_path, text))


def test_channels_describe_themselves_without_secrets() -> None:
    assert "webhook:https://partner.example/hook" == (
        WebhookChannel(url="https://partner.example/hook?token=abc", secret_env="HOOK").describe()
    )
    assert "email:a@regulator.example,b@regulator.example" == (
        EmailChannel(to=["a@regulator.example", "Team B <b@regulator.example>"]).describe()
    )
    assert "slack" == SlackChannel(url_env="TEAM_SLACK_URL").describe()
    assert "pagerduty" == PagerDutyChannel(routing_key_env="TEAM_PD_KEY").describe()


def test_channels_parse_by_their_type() -> None:
    assert isinstance(CHANNEL.validate_python({"type": "slack", "url_env": "X"}), SlackChannel)
    assert isinstance(CHANNEL.validate_python({"type": "webhook"}), WebhookChannel)
    with pytest.raises(ValidationError):
        CHANNEL.validate_python({"type": "email", "to": ["a@b.example\nBcc: x@evil.example"]})
