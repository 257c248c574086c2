//! What a failed request to the API server means for the one who sent it: retry it later, or
//! give it up. One closed set of categories, so `api_write_failures_total{category}`, the Lease
//! errors and the logs group failures the same way.

use std::time::Duration;

/// Why a request to the API server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFailure {
    /// No answer within the request's deadline (a hung or overloaded API server).
    Timeout,
    /// No connection (refused, reset, DNS): the API server cannot be reached at all.
    Unreachable,
    /// 429: API Priority and Fairness throttles this client.
    Throttled,
    /// 5xx: the API server (or etcd behind it) failed.
    ServerError,
    /// 409: a precondition (resourceVersion, uid) no longer holds, or a name is taken.
    Conflict,
    /// 404: the object is gone.
    NotFound,
    /// 422: the object written is invalid for the schema.
    Invalid,
    /// Any other 4xx (RBAC, bad request): sending it again will not help.
    Rejected,
    /// The answer could not be read (not the JSON expected).
    BadResponse,
}

impl ApiFailure {
    /// The failure of `error`.
    pub fn of(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => match status.code {
                429 => ApiFailure::Throttled,
                409 => ApiFailure::Conflict,
                404 => ApiFailure::NotFound,
                422 => ApiFailure::Invalid,
                500..=599 => ApiFailure::ServerError,
                _ => ApiFailure::Rejected,
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                if is_timeout(error) {
                    ApiFailure::Timeout
                } else {
                    ApiFailure::Unreachable
                }
            }
            kube::Error::SerdeError(_) | kube::Error::ReadEvents(_) => ApiFailure::BadResponse,
            _ => ApiFailure::Rejected,
        }
    }

    /// The `category` label value.
    pub fn category(self) -> &'static str {
        match self {
            ApiFailure::Timeout => "timeout",
            ApiFailure::Unreachable => "unreachable",
            ApiFailure::Throttled => "throttled",
            ApiFailure::ServerError => "server_error",
            ApiFailure::Conflict => "conflict",
            ApiFailure::NotFound => "not_found",
            ApiFailure::Invalid => "invalid",
            ApiFailure::Rejected => "rejected",
            ApiFailure::BadResponse => "bad_response",
        }
    }

    /// Whether the same request may succeed later: the API server was slow, throttled, down
    /// or answered garbage. A conflict, a missing object or a refusal stays what it is.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ApiFailure::Timeout
                | ApiFailure::Unreachable
                | ApiFailure::Throttled
                | ApiFailure::ServerError
                | ApiFailure::BadResponse
        )
    }
}

/// Whether a transport error is a timeout (hyper-timeout's reader or connector gave up).
fn is_timeout(error: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if current.to_string().contains("timed out") {
            return true;
        }
        source = current.source();
    }
    false
}

/// The wait before retry number `attempt` (1-based) of a transient failure: `min` doubled per
/// attempt, at most `max`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    min.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure("x", "y").with_code(code)))
    }

    #[test]
    fn codes_map_to_categories_and_only_passing_troubles_are_retried() {
        let table = [
            (429, ApiFailure::Throttled, true),
            (500, ApiFailure::ServerError, true),
            (503, ApiFailure::ServerError, true),
            (409, ApiFailure::Conflict, false),
            (404, ApiFailure::NotFound, false),
            (422, ApiFailure::Invalid, false),
            (403, ApiFailure::Rejected, false),
        ];
        for (code, failure, transient) in table {
            assert_eq!(ApiFailure::of(&api(code)), failure, "{code}");
            assert_eq!(failure.is_transient(), transient, "{code}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(backoff(1, min, max), min);
        assert_eq!(backoff(3, min, max), Duration::from_secs(4));
        assert_eq!(backoff(99, min, max), max);
    }
}
