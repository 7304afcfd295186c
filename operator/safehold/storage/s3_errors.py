"""botocore exceptions -> Safehold's storage errors, classified once (DESIGN.md section 7).

Transient (retried by :mod:`safehold.storage.retry`): 5xx, throttling, request timeouts, cut or
refused connections, read timeouts. Permanent: everything else, with a message that names the
fix — bad credentials, missing permissions, a missing bucket, a bucket in another region.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)

from safehold.storage.base import (
    ObjectNotFound,
    StorageAuthError,
    StorageError,
    TransientStorageError,
)

_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "OperationAborted", "PriorRequestNotComplete",
}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
# refused credentials or a denied operation: auth.failure in the audit log (so is any 403)
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
               "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled"}
_CREDENTIALS_HELP = (
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), AWS_WEB_IDENTITY_TOKEN_FILE +"
    " AWS_ROLE_ARN (IRSA), AWS_PROFILE, or an instance profile"
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def classify(exc: Exception, action: str, where: str, key: str | None = None) -> StorageError:
    """The StorageError for ``exc`` raised while doing ``action`` on ``where`` (s3://b/k).

    ``key`` is given for single-object reads: a 404 then means that object is absent.
    """
    if isinstance(exc, ClientError):
        return _client_error(exc, action, where, key)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageAuthError(f"cannot {action} {where}: no usable AWS credentials ({exc});"
                                f" provide them through {_CREDENTIALS_HELP}")
    if isinstance(exc, SSLError):
        return StorageError(f"cannot {action} {where}: TLS failed ({exc}); check the endpoint's"
                            " certificate, or point AWS_CA_BUNDLE at the CA that signed it")
    if isinstance(exc, (HTTPClientError, IncompleteReadError, ConnectionError, TimeoutError)):
        return TransientStorageError(f"cannot {action} {where}: {exc}")
    if isinstance(exc, BotoCoreError):
        return StorageError(f"cannot {action} {where}: {exc}")
    if isinstance(exc, OSError):  # a socket error that escaped botocore's wrappers
        return TransientStorageError(f"cannot {action} {where}: {exc}")
    raise exc  # a bug or a producer error: not ours to classify


def _client_error(exc: ClientError, action: str, where: str, key: str | None) -> StorageError:
    code = error_code(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    message = exc.response.get("Error", {}).get("Message", "") or str(exc)
    bucket = where.removeprefix("s3://").split("/", 1)[0]
    if code in _NOT_FOUND_CODES and key is not None:
        return ObjectNotFound(key)
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return TransientStorageError(f"cannot {action} {where}: {code or status} ({message})")
    fix = {
        "NoSuchBucket": f"the bucket {bucket!r} does not exist: create it, or fix the bucket in"
                        " the repository URL (and ?endpoint= / AWS_ENDPOINT_URL)",
        "InvalidAccessKeyId": "S3 does not know this access key id: check AWS_ACCESS_KEY_ID (or"
                              " the credentials Secret)",
        "SignatureDoesNotMatch": "the secret key does not match the access key id: check"
                                 " AWS_SECRET_ACCESS_KEY (or the credentials Secret)",
        "ExpiredToken": "the session token has expired: refresh the credentials"
                        " (AWS_SESSION_TOKEN, IRSA token file)",
        "InvalidToken": "the session token is malformed: check AWS_SESSION_TOKEN",
        "AccessDenied": f"access denied: grant the runner's identity s3:GetObject, s3:PutObject,"
                        f" s3:DeleteObject, s3:ListBucket, s3:ListBucketMultipartUploads and"
                        f" s3:AbortMultipartUpload on bucket {bucket!r} (and kms:GenerateDataKey/"
                        f"kms:Decrypt when using SSE-KMS)",
        "PermanentRedirect": f"bucket {bucket!r} is in another region: add ?region=<its region>"
                             " to the repository URL or set AWS_REGION",
        "AuthorizationHeaderMalformed": "the request was signed for the wrong region: add"
                                        " ?region=<the bucket's region> to the repository URL",
        "InvalidBucketName": f"{bucket!r} is not a valid bucket name",
        "PreconditionFailed": "the object was replaced while it was being read; read it again",
        "KMS.NotFoundException": "the KMS key does not exist: check ?kms_key_id=",
    }.get(code)
    if fix is None and status == 403:
        fix = f"access denied ({code or 403}): check the credentials and the bucket policy"
    if fix is None and status == 404 and key is None:
        fix = f"not found ({code or 404}): check the bucket {bucket!r} and the endpoint"
    detail = fix or f"{code or status}: {message}"
    kind = StorageAuthError if code in _AUTH_CODES or status in (401, 403) else StorageError
    return kind(f"cannot {action} {where}: {detail}")
