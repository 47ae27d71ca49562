"""`companion echo-server` (a local xiaozhi server) and `companion activate` (bind this device, then exit)."""

from __future__ import annotations

import asyncio
import logging
import ssl

import click

from ..config import load_settings
from ..errors import ConfigError
from .daemon import configure_logging

log = logging.getLogger("companion")
PORT = click.IntRange(0, 65535)  # 0: any free port


@click.command("echo-server")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0 for the LAN)"
)
@click.option("--port", type=PORT, default=8000, show_default=True, help="websocket port")
@click.option(
    "--ota-port",
    type=PORT,
    default=8003,
    show_default=True,
    help="OTA/activation HTTP port",
)
@click.option("--no-ota", is_flag=True, help="serve only the websocket (no OTA endpoint)")
@click.option("--activation", is_flag=True, help="OTA hands out a 6-digit code until the device is bound")
@click.option(
    "--bind-after",
    type=click.IntRange(min=1),
    help="with --activation: bind automatically after N activation polls",
)
@click.option(
    "--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate: serve wss/https"
)
@click.option(
    "--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key for --tls-cert"
)
@click.option("--debug", is_flag=True, help="detailed logs")
def echo_server(
    host: str,
    port: int,
    ota_port: int,
    no_ota: bool,
    activation: bool,
    bind_after: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    debug: bool,
) -> None:
    """A local xiaozhi server that says your words back: test mic, speaker, LEDs and latency offline."""
    from ..fieldtest.echo_server import EchoServer

    click.get_current_context().meta["companion.debug"] = debug
    configure_logging(None, debug)
    context = None
    if tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(tls_cert, tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"--tls-cert/--tls-key: cannot load the certificate ({exc})") from None
    server = EchoServer(
        host,
        port,
        ota=not no_ota,
        ota_port=ota_port,
        activation=activation,
        bind_after_polls=bind_after,
        ssl_context=context,
    )

    async def serve() -> None:
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}/{ota_port}: {exc.strerror or exc}") from None
        click.echo(f"echo server: websocket {server.websocket_url}")
        if server.ota_enabled:
            click.echo(f"             OTA       {server.ota_url}")
            click.echo(f"point companion at it: --set xiaozhi.ota_url={server.ota_url}")
        else:
            click.echo(f"point companion at it: --set xiaozhi.websocket_url={server.websocket_url}")
        click.echo("Ctrl-C stops it.")
        await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        click.echo("echo server stopped")


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="override one setting")
@click.option("--debug", is_flag=True, help="detailed logs and tracebacks")
def activate(config_path: str | None, overrides: tuple[str, ...], debug: bool) -> None:
    """Bind this device to its xiaozhi account: show the 6-digit code, wait until it is entered, exit 0."""
    from ..backends.xiaozhi import ota
    from ..backends.xiaozhi.identity import load_identity

    click.get_current_context().meta["companion.debug"] = debug
    settings = load_settings(config_path, overrides)
    configure_logging(settings, debug)
    xiaozhi = settings.xiaozhi
    if not xiaozhi.ota_url:
        raise ConfigError(f"{settings.source}: xiaozhi.ota_url is empty: there is no server to activate with")
    identity = load_identity(xiaozhi)
    click.echo(f"Device-Id {identity.device_id}; checking {xiaozhi.ota_url}")

    def show(code: ota.Activation) -> None:
        click.echo("")
        click.echo(f"  Activation code: {code.code}")
        if code.message:
            click.echo("  " + code.message.replace("\n", "\n  "))
        click.echo("  Enter it in the server's console; waiting (Ctrl-C to give up)…")

    async def run() -> ota.OtaReply:
        return await ota.activate(xiaozhi, identity, on_code=show)

    reply = asyncio.run(run())
    offered = [name for name, block in (("websocket", reply.websocket), ("mqtt", reply.mqtt)) if block]
    click.echo(f"activated: the server offers {' and '.join(offered) or 'no channel yet'}")


def register(group: click.Group) -> None:
    """Add `echo-server` and `activate`."""
    group.add_command(echo_server)
    group.add_command(activate)
