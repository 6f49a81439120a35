//! Conventions for calls to the API server shared by the controller and the webhook: how the
//! operator creates objects, and which refusals mean the work is already done.

use kube::api::PostParams;

pub mod connection;
pub mod inflight;

use crate::naming::MANAGER;

/// Parameters of every create: the operator's field manager, so later applies own the fields.
pub fn create_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// `Ok(None)` when the API server answered with `code`; the result otherwise.
fn unless<T>(code: u16, result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(status)) if status.code == code => Ok(None),
        Err(error) => Err(error),
    }
}

/// A delete or read of something already gone (404) is not an error: `Ok(None)`.
pub fn gone_is_ok<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    unless(404, result)
}

/// A create of something that exists already (409) is not an error: `Ok(None)`.
pub fn exists_is_ok<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    unless(409, result)
}

/// Whether the API server refused with `code`.
pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16) -> Result<(), kube::Error> {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": "x", "message": "refused"
        }))
        .expect("status fixture");
        Err(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn only_the_named_refusal_counts_as_done() {
        assert!(matches!(gone_is_ok(refused(404)), Ok(None)));
        assert!(gone_is_ok(refused(409)).is_err());
        assert!(matches!(exists_is_ok(refused(409)), Ok(None)));
        assert!(exists_is_ok(refused(500)).is_err());
        assert!(matches!(gone_is_ok(Ok(())), Ok(Some(()))));
        assert!(is_status(&refused(409).expect_err("refused"), 409));
    }
}
