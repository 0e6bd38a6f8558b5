"""Platform settings, read from ``OPENAIM_*`` environment variables (or a ``.env`` file).

Secrets are never part of the repository: when a secret is not given, one is generated on first use and
kept in the data directory with owner-only permissions.
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from openaim.private_files import private_file, private_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
MIN_AUDIT_KEY_CHARS = 32  # a generated one is 43 (32 random bytes, URL-safe base64)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENAIM_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("var"), description="Database, Orthanc storage, generated secrets.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: a SQLite file in the data directory."
    )

    host: str = "127.0.0.1"
    port: int = 8000
    cookie_secure: bool = Field(
        True, description="Send cookies over HTTPS only. Browsers treat 127.0.0.1 as secure."
    )
    session_hours: float = Field(12.0, gt=0, description="The longest a session lasts, in use or not.")
    session_idle_minutes: float = Field(
        30.0,
        gt=0,
        description="A session unused for this long ends (pages polling by themselves are not use; use is "
        "noted at most once a minute, so it may end up to a minute later).",
    )
    session_recheck_s: float = Field(
        5.0,
        ge=0,
        description="How long the pixel routes (frames, thumbnails, rendered images) trust a session the "
        "database found live, instead of asking again for each of a series' hundreds of frames. A session "
        "ended by another process (`openaim user disable`) reads pixels for at most this long; 0 asks "
        "every time.",
    )
    max_request_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="The largest request body (JSON, forms) the viewer reads; larger ones get 413. The "
        "biggest real one, a case pack's list of 50 study UIDs, is ~3.5 KB.",
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024,
        gt=0,
        description="The largest STOW-RS upload (admins only); it is held in memory while every file in "
        "it is checked, so this bounds the viewer's memory per upload.",
    )

    password_min_score: int = Field(
        3,
        ge=0,
        le=4,
        description="The least zxcvbn score (0-4) a new password needs; 3 is over 10^8 guesses. Breached "
        "passwords and passwords containing the user name are refused whatever their score.",
    )
    signin_max_failures: int = Field(
        5,
        ge=0,
        description="Wrong passwords from one address for one username, within the window, that lock that "
        "pair (right password or not) for OPENAIM_SIGNIN_LOCKOUT_S; 0: no lock.",
    )
    signin_failure_window_s: float = Field(900.0, gt=0, description="The window failures are counted in.")
    signin_lockout_s: float = Field(
        900.0,
        ge=0,
        description="How long a locked (username, address) pair is refused after its last failure; each "
        "failure after that locks it again.",
    )
    signin_username_max_failures: int = Field(
        50,
        ge=1,
        description="Failures for one username from all addresses, within the window, past which it is "
        "refused except from addresses it signed in from before (guessing spread over many addresses).",
    )
    signin_source_max_failures: int = Field(
        100,
        ge=1,
        description="Failures from one address for all usernames, within the window, past which it is "
        "refused except for usernames that signed in from it before (one host trying many names).",
    )
    signin_known_pair_days: float = Field(
        30.0,
        ge=0,
        description="A (username, address) pair that signed in within this many days is exempt from the "
        "two wide limits above (not from its own lock).",
    )

    oidc_issuer: str | None = Field(
        None,
        description="The hospital's OpenID Connect provider (its issuer URL; the discovery document is "
        "read from ISSUER/.well-known/openid-configuration). Unset: password sign-in only.",
    )
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_display_name: str = Field("your hospital account", description="Shown on the sign-in button.")
    oidc_scopes: str = "openid profile email"
    oidc_redirect_url: str | None = Field(
        None,
        description="This platform's callback as the provider knows it (https://HOST/signin/oidc/callback); "
        "unset: taken from the request (wrong behind a proxy that rewrites the host).",
    )
    oidc_username_claim: str = Field(
        "preferred_username", description="The claim that names the user (the subject when absent)."
    )
    oidc_roles_claim: str = Field(
        "groups",
        description="The claim holding the user's groups or roles at the provider; a dotted path reaches a "
        "nested one (realm_access.roles).",
    )
    oidc_role_map: dict[str, str] = Field(
        default_factory=dict,
        description='Provider group or role -> platform role, e.g. {"radiology": "radiologist", '
        '"it-admins": "admin"} (JSON in the variable). A user none of whose groups map may not sign in; '
        "roles are set from the claims at every sign-in.",
    )

    orthanc_url: str | None = Field(
        None,
        description="An Orthanc the platform does not start (e.g. in docker-compose). "
        "Unset: the platform launches its own Orthanc on loopback.",
    )
    orthanc_username: str | None = None
    orthanc_password: SecretStr | None = None
    orthanc_http_port: int = 8042
    orthanc_executable: str = "Orthanc"
    orthanc_plugins_dir: Path = Path("/usr/share/orthanc/plugins")
    orthanc_stable_age: int = Field(
        5,
        description="Seconds without a new instance before Orthanc calls a study stable. Orthanc's "
        "default (60) delays every AI triage flag by a minute; 5 s is enough for a modality sending "
        "one study over one association, and keeps stable-to-result latency short.",
    )
    orthanc_restart_max_seconds: float = Field(
        60.0,
        gt=0,
        description="The child Orthanc is started again whenever it dies, after 1 s, then 2, 4, ... for "
        "deaths in a row, never waiting longer than this (an Orthanc that keeps dying is not hammered).",
    )

    viewer_frame_cache_mb: int = Field(
        256,
        ge=0,
        description="Memory for decoded frames the viewer keeps (an instance's pixels never change): a "
        "cached frame costs no Orthanc request and no decoding. 256 MB holds ~500 CT slices.",
    )
    viewer_max_frame_mb: int = Field(
        128,
        ge=1,
        description="The largest frame the viewer decodes, in MB once decoded (an 8192 x 8192 16-bit "
        "frame is 128 MB). A header may claim 65535 x 65535 pixels in a few bytes of compressed data: "
        "such a frame is refused (422) before any memory is allocated for it.",
    )
    viewer_thumbnail_cache_mb: int = Field(
        16,
        ge=0,
        description="Memory for series thumbnails the viewer has drawn (a 128-pixel PNG is a few KB: 16 MB "
        "holds thousands). Drawing one fetches and decodes the whole instance; a kept one costs nothing.",
    )

    study_index_follow: bool = Field(
        True,
        description="The viewer keeps the study index (the worklist) level with Orthanc's /changes; where "
        "several viewer processes share one database, one follows and the others set this false.",
    )
    inference_enabled: bool = Field(
        True, description="Run the inference service inside `openaim serve` / `demo` (off: run it alone)."
    )
    inference_poll_seconds: float = Field(
        0.05,
        gt=0,
        description="How often the watcher asks Orthanc for /changes: a new stable study waits half of it "
        "on average; idle, the service and Orthanc use 4-5.5% of one core at 0.05 s (~3.5% at 0.1 s).",
    )
    inference_reconcile_seconds: float = Field(
        300.0,
        gt=0,
        description="How often the service lists every series in Orthanc and routes those of stable "
        "studies with neither a job nor an unrouted row (their StableStudy change is lost when Orthanc is "
        "killed while they settle). It also runs at start and ~2 s after any archive outage. ~45 ms per "
        "1000 series (Orthanc 1.10, SQLite index): raise it for archives of millions of series.",
    )
    inference_batch_size: int = Field(8, ge=1, description="Jobs that arrive together run as one batch.")
    inference_device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    inference_precision: str = Field(
        "auto",
        description="auto (bf16 autocast on CUDA, fp32 on CPU), fp32, or bf16 (autocast on CPU too: "
        "~2.5x faster on AVX-512 CPUs, outputs differ from fp32 by ~1e-2).",
    )
    inference_result_writers: int = Field(
        2,
        ge=1,
        description="Processes that build and store results' SR and SEG (pure Python, kept off the "
        "model's process); one result each at a time. More where there are more cores.",
    )
    inference_max_attempts: int = Field(
        5, ge=1, description="Attempts before a job that keeps failing ends failed."
    )
    inference_retry_seconds: float = Field(
        2.0, description="First back-off after a transient error; it doubles with each attempt."
    )
    inference_lease_seconds: float = Field(
        60,
        description="A running job whose worker has not finished it by then is taken back (a worker claims "
        "one batch at a time, seconds of work).",
    )

    audit_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key of the audit trail's hash chain (at least 32 characters). Unset: one "
        "is generated once into the data directory (audit-key, mode 0600), which is enough for a demo; a "
        "hospital sets it from its secret store, so that whoever can write the database and the data "
        "directory cannot re-sign a rewritten trail.",
    )
    audit_anchor_file: Path | None = Field(
        None,
        description="Append-only file (mode 0600) where the trail's head is anchored outside the database: "
        "one line per anchor (time, last row id, its hash, a MAC). Unset: audit-anchors.log in the data "
        "directory. Best on storage the database's owners cannot rewrite (chattr +a, another host).",
    )
    audit_anchor_seconds: float = Field(
        60.0, gt=0, description="The head is anchored at most this long after it moved (and at shutdown)."
    )
    audit_anchor_rows: int = Field(
        1000, ge=1, description="...or as soon as this many rows were appended since the last anchor."
    )

    shared_data_dir: Path = Field(
        REPO_ROOT.parent / "shared" / "data", description="Demo and test data (../shared/data)."
    )
    frontend_dir: Path = REPO_ROOT / "frontend"
    demo_model_package: Path = Field(
        REPO_ROOT / "inference" / "packages" / "openaim-demo-cxr",
        description="The model `openaim demo` installs and shows (trained by this project; not clinical).",
    )
    model_modules: tuple[str, ...] = Field(
        ("inference.models",),
        description="Python packages a state-dict model package may name as its module. Importing runs "
        "code, so a hospital adds a vendor's package here deliberately (JSON list in the variable).",
    )

    @cached_property
    def resolved_data_dir(self) -> Path:
        return private_folder(self.data_dir.resolve())

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'openaim.db'}"

    @cached_property
    def resolved_audit_key(self) -> bytes:
        if self.audit_key is None:
            return generated_secret(self.resolved_data_dir / "audit-key").encode()
        key = self.audit_key.get_secret_value()
        if len(key) < MIN_AUDIT_KEY_CHARS:
            raise ValueError(f"OPENAIM_AUDIT_KEY: at least {MIN_AUDIT_KEY_CHARS} characters")
        return key.encode()

    @property
    def resolved_audit_anchor_file(self) -> Path:
        return self.audit_anchor_file or self.resolved_data_dir / "audit-anchors.log"


def generated_secret(path: Path, nbytes: int = 32) -> str:
    """Read a secret kept in ``path``, creating it (mode 0600) on first use."""
    if path.exists():
        return private_file(path).read_text().strip()
    private_folder(path.parent)
    value = secrets.token_urlsafe(nbytes)
    private_file(path).write_text(value)
    return value
