"""`companion provision qiniu --agent NAME|ID`: take this device from fresh to bound, in one command."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

import click

from ..config import load_settings
from ..errors import ConfigError
from .platforms import PlatformOptions, emit, group_options, pairs, seconds_option


def register(group: click.Group) -> None:
    group.add_command(provision)


@click.group("provision")
def provision() -> None:
    """Bind this device to a platform's agent in one step (OTA check, bind, wait for activation)."""


@provision.command("qiniu")
@click.option("--agent", "agent_ref", required=True, metavar="NAME|ID", help="the agent: exact name or id")
@click.option(
    "--ota-url",
    metavar="URL",
    help="the device OTA endpoint (default: xiaozhi.ota_url from the config if set, "
    "else https://xrobo.qiniuapi.com/v1/ota/)",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file")
@click.option(
    "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="override one setting (repeatable)"
)
@group_options("COMPANION_QINIU", "Qiniu management host (default https://xrobo.qiniu.com)")
@seconds_option(
    "--activation-timeout",
    low=1,
    high=86400,
    default=300.0,
    help="seconds to wait for the OTA server to confirm activation",
)
@seconds_option(
    "--poll-interval",
    low=0.05,
    high=60,
    default=3.0,
    help="seconds between activation polls (the firmware uses 3)",
)
@click.option("--quiet", "-q", is_flag=True, help="no progress lines on stderr")
@click.option("--debug", is_flag=True, help="detailed logs and tracebacks")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON on stdout")
def provision_qiniu_cmd(
    agent_ref: str,
    ota_url: str | None,
    config_path: str | None,
    overrides: tuple[str, ...],
    base_url: str | None,
    timeout_s: float,
    credentials_file: str | None,
    activation_timeout: float,
    poll_interval: float,
    quiet: bool,
    debug: bool,
    as_json: bool,
) -> None:
    """Bind this device to the Qiniu agent NAME|ID: OTA check, bind its activation code through the
    management API (or pre-register its MAC when no code is offered), wait until activation is confirmed.

    Running it again on a bound device says so and exits 0. Credentials as for `companion qiniu`.
    """
    from ..backends.xiaozhi import ota
    from ..backends.xiaozhi.identity import load_identity
    from ..bringup.provisioning import QINIU_OTA_URL, provision_qiniu, qiniu_ota_url
    from ..service.logsetup import setup_logging
    from .qiniu import QiniuOptions, client_for

    click.get_current_context().meta["companion.debug"] = debug
    setup_logging("debug" if debug else "warning", excepthook=False)
    settings = load_settings(config_path, overrides)
    url = qiniu_ota_url(settings.xiaozhi.ota_url, ota_url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        where = "--ota-url" if ota_url else f"{settings.source}: xiaozhi.ota_url"
        raise ConfigError(f"{where} must be an http(s) URL like {QINIU_OTA_URL}, got {url!r}")
    xiaozhi = dataclasses.replace(settings.xiaozhi, ota_url=url)
    identity = load_identity(xiaozhi)
    opts: QiniuOptions = PlatformOptions(base_url, timeout_s, credentials_file, {}, client_for)

    def progress(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    result = opts.call(
        lambda client: provision_qiniu(
            xiaozhi,
            identity,
            client,
            agent_ref,
            timeout_s=activation_timeout,
            poll_s=poll_interval,
            retry_s=poll_interval * ota.ACTIVATION_RETRY_S / ota.ACTIVATION_POLL_S,
            on_progress=progress,
        )
    )
    emit(
        as_json,
        result.to_json(),
        lambda: pairs(
            [
                ("device", result.device_id),
                ("agent", result.agent_label),
                ("result", result.summary()),
                ("channel", f"{result.transport} {result.endpoint}" if result.transport else None),
            ]
        ),
    )
