"""Who may call ``duratask serve``: loopback by default, a bearer token beyond it, TLS from
a certificate pair."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from durabletask.internal import orchestrator_service_pb2_grpc as pb_grpc
from google.protobuf import empty_pb2

from duratask.cli.main import main
from duratask.serve import SidecarConfigError, SidecarServer
from duratask.serve.auth import authorized, check_bind, is_loopback
from tests.serve.harness import sdk_client_on, serving


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com"])
def test_any_other_address_needs_a_token(host: str) -> None:
    with pytest.raises(SidecarConfigError, match="give a token"):
        SidecarServer("sqlite:///unused.db", host=host)
    check_bind(host, "s3cret")


def test_the_token_is_compared_whole() -> None:
    assert authorized([("authorization", "Bearer s3cret")], "s3cret")
    assert not authorized([("authorization", "Bearer s3cre")], "s3cret")
    assert not authorized([("authorization", "s3cret")], "s3cret")
    assert not authorized([], "s3cret")
    assert authorized([], None)


def test_the_cli_refuses_an_open_address_without_token_and_half_a_tls_pair(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--store", url, "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "give a token" in result.output
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    result = runner.invoke(main, ["serve", "--store", url, "--tls-cert", str(cert)])
    assert result.exit_code == 2 and "--tls-key" in result.output
    assert not (tmp_path / "hub.db").exists()


def test_calls_without_the_token_are_refused(hub_url: str) -> None:
    with serving(hub_url, token="s3cret") as server:
        anonymous = sdk_client_on(server.address)
        with pytest.raises(grpc.RpcError) as refused:
            anonymous.get_orchestration_state("any")
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        anonymous.close()
        wrong = sdk_client_on(server.address, metadata=[("authorization", "Bearer nope")])
        with pytest.raises(grpc.RpcError):
            wrong.get_orchestration_state("any")
        wrong.close()
        allowed = sdk_client_on(server.address, metadata=[("authorization", "Bearer s3cret")])
        assert allowed.get_orchestration_state("any") is None
        allowed.close()


@pytest.fixture
def cert_pair(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    yield cert, key


def test_tls_from_a_certificate_pair(tmp_path: Path, cert_pair: tuple[Path, Path]) -> None:
    cert, key = cert_pair
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with serving(url, tls=(key.read_bytes(), cert.read_bytes())) as server:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(server.address, credentials) as channel:
            stub = pb_grpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
            assert stub.Hello(empty_pb2.Empty(), timeout=10) == empty_pb2.Empty()
        with grpc.insecure_channel(server.address) as plain:
            stub = pb_grpc.TaskHubSidecarServiceStub(plain)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError):
                stub.Hello(empty_pb2.Empty(), timeout=5)
