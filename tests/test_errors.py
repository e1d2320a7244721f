import email.utils
import json
import time

import pytest

from nanobanana_async import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    NanoBananaError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TaskCancelledError,
    TaskFailedError,
    UnprocessableEntityError,
)
from nanobanana_async.errors import error_from_response, parse_retry_after


def _body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_gateway_401() -> None:
    err = error_from_response(
        401,
        {},
        _body({"error": {"code": "UNAUTHORIZED", "message": "bad key"}, "request_id": "g1"}),
    )
    assert type(err) is AuthenticationError
    assert (err.status_code, err.code, err.message, err.request_id) == (
        401,
        "UNAUTHORIZED",
        "bad key",
        "g1",
    )
    assert isinstance(err, APIStatusError) and isinstance(err, NanoBananaError)


def test_gateway_429_with_retry_after() -> None:
    err = error_from_response(
        429,
        {"Retry-After": "7"},
        _body(
            {"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "slow down"}, "request_id": "g2"}
        ),
    )
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 7.0 and err.code == "RATE_LIMIT_EXCEEDED"


def test_application_bodies() -> None:
    err = error_from_response(403, {}, _body({"detail": "Model not allowed for this user"}))
    assert type(err) is PermissionDeniedError and err.message == "Model not allowed for this user"
    err = error_from_response(
        404, {"X-Request-Id": "hdr-1"}, _body({"detail": "Request not found"})
    )
    assert type(err) is NotFoundError and err.request_id == "hdr-1"
    err = error_from_response(
        422,
        {},
        _body({"detail": [{"loc": ["body", "aspect_ratio"], "msg": "bad value", "type": "enum"}]}),
    )
    assert type(err) is UnprocessableEntityError
    assert "aspect_ratio" in err.message
    err = error_from_response(400, {}, _body({"status": "ALREADY_COMPLETED"}))
    assert type(err) is BadRequestError and err.code == "ALREADY_COMPLETED"


@pytest.mark.parametrize("code", range(40201, 40209))
def test_balance_codes(code: int) -> None:
    body = _body(
        {
            "status": {"code": 402, "message": "Insufficient credits", "error_code": code},
            "data": None,
        }
    )
    err = error_from_response(402, {}, body)
    assert type(err) is InsufficientCreditsError
    assert err.code == str(code) and err.message == "Insufficient credits"
    # A balance code is a balance error even if a proxy rewrote the status.
    assert type(error_from_response(418, {}, body)) is InsufficientCreditsError


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_server_errors(status: int) -> None:
    err = error_from_response(status, {"Retry-After": "2"}, b"<html>bad gateway</html>")
    assert isinstance(err, ServerError) and err.status_code == status
    assert err.retry_after == 2.0
    assert "bad gateway" in err.message


def test_garbage_body_keeps_excerpt() -> None:
    err = error_from_response(400, {}, b"x" * 10_000)
    assert type(err) is BadRequestError and len(err.body_excerpt) <= 201
    err = error_from_response(418, {}, b"")
    assert type(err) is APIStatusError and err.status_code == 418


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_retry_after({"Retry-After": "3.5"}) == 3.5
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(30, abs=1.5)
    assert parse_retry_after({"Retry-After": "-4"}) is None
    assert parse_retry_after({"Retry-After": "nan"}) is None
    assert parse_retry_after({"Retry-After": "inf"}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_task_errors() -> None:
    err = TaskFailedError("blocked", request_id="r1", error_type="CONTENT_BLOCKED")
    assert "r1" in str(err) and "CONTENT_BLOCKED" in str(err)
    cancelled = TaskCancelledError("x", request_id="r2", error_type="CANCELED")
    assert cancelled.request_id == "r2"


# -- the tree -----------------------------------------------------------------------------------


def _error_classes() -> list[type[BaseException]]:
    import nanobanana_async.errors as errors

    return sorted(
        {
            obj
            for obj in vars(errors).values()
            if isinstance(obj, type)
            and issubclass(obj, BaseException)
            and obj.__module__ in ("nanobanana_async", "nanobanana_async.errors")
        },
        key=lambda cls: cls.__name__,
    )


def test_every_error_class_is_under_the_root_exported_and_drawn() -> None:
    import nanobanana_async
    import nanobanana_async.errors as errors

    classes = _error_classes()
    assert len(classes) == 28  # a new class: draw it in the tree and export it
    drawn = errors.__doc__ or ""
    for cls in classes:
        assert issubclass(cls, NanoBananaError), cls
        assert getattr(nanobanana_async, cls.__name__) is cls, f"{cls.__name__} not at the root"
        assert cls.__name__ in errors.__all__, cls
        root = cls is NanoBananaError and f"\n    {cls.__name__}\n" in drawn
        assert root or f"── {cls.__name__} " in drawn, f"{cls.__name__} missing from the tree"


def test_no_exception_class_is_defined_outside_errors() -> None:
    import nanobanana_async

    for name in nanobanana_async.__all__:
        obj = getattr(nanobanana_async, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, NanoBananaError), name
            assert obj in _error_classes(), f"{name} is not defined in errors.py"


def test_moved_errors_keep_their_old_names_and_bases() -> None:
    import nanobanana_async
    from nanobanana_async import download, errors, journal

    assert journal.JournalMismatchError is errors.JournalMismatchError
    assert journal.JournalStateError is errors.JournalStateError
    assert download.DownloadError is errors.DownloadError
    assert nanobanana_async.JournalMismatchError is errors.JournalMismatchError
    mismatch = errors.JournalMismatchError(4)
    assert isinstance(mismatch, ValueError) and isinstance(mismatch, errors.JournalError)
    assert mismatch.index == 4 and "4" in str(mismatch)
    state = errors.JournalStateError("journal item 1 is pending")
    assert isinstance(state, RuntimeError) and isinstance(state, errors.JournalError)
    with pytest.raises(ValueError):  # existing `except ValueError` code keeps working
        raise mismatch


def test_timeouts_are_builtin_timeouts_and_the_old_name_is_an_alias() -> None:
    import builtins

    import nanobanana_async
    from nanobanana_async import errors

    assert errors.TimeoutError is errors.RequestTimeoutError
    assert nanobanana_async.TimeoutError is nanobanana_async.RequestTimeoutError
    assert issubclass(errors.RequestTimeoutError, errors.TransportError)
    assert issubclass(errors.RequestTimeoutError, builtins.TimeoutError)
    err = errors.DownloadTimeoutError("https://u:secret@cdn.example/a.png?sig=x", "timed out")
    assert isinstance(err, errors.DownloadError) and isinstance(err, errors.RequestTimeoutError)
    assert isinstance(err, builtins.TimeoutError)
    assert str(err) == "cannot download https://cdn.example/a.png: timed out"  # no secrets
    assert err.args == (str(err),) and err.errno is None


def test_response_too_large() -> None:
    from nanobanana_async import ProtocolError, ResponseTooLargeError

    err = ResponseTooLargeError("response body exceeds the 10-byte cap", limit=10)
    assert isinstance(err, ProtocolError) and err.limit == 10 and err.size is None
    assert str(err) == "response body exceeds the 10-byte cap"
