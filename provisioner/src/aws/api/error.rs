//! Every AWS failure becomes one [`AwsError`] here, so each call in the
//! service modules is the SDK builder, `send`, and one mapping: what was
//! being done, to which resource. An absent resource (a code the caller
//! names) becomes `None` instead of an error.

use std::fmt::Display;

use aws_sdk_ec2::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// A failed AWS call: what, on which resource, and AWS's error code.
#[derive(Debug, thiserror::Error)]
#[error("{action} {resource}: AWS error {code}: {message}")]
pub struct AwsError {
    /// What we were doing (`creating security group`).
    pub action: String,
    /// The resource (its name or id).
    pub resource: String,
    /// AWS's error code (`InvalidGroup.Duplicate`), or the SDK's failure
    /// kind when the request never got an answer.
    pub code: String,
    /// AWS's message.
    pub message: String,
}

/// Result of an AWS call.
pub type AwsResult<T> = Result<T, AwsError>;

impl AwsError {
    /// An error we raise ourselves about a resource (not one AWS sent).
    pub(super) fn new(action: &str, resource: &str, code: &str, message: impl Display) -> Self {
        Self {
            action: action.to_owned(),
            resource: resource.to_owned(),
            code: code.to_owned(),
            message: message.to_string(),
        }
    }
}

/// The SDK's error `e`, met while doing `action` to `resource`.
pub(super) fn fail<E, R>(action: &str, resource: impl Display, e: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, message) = match (e.code(), e.message()) {
        (Some(c), m) => (c.to_owned(), m.unwrap_or_default().to_owned()),
        (None, _) => (
            match &e {
                SdkError::ConstructionFailure(_) => "ConstructionFailure",
                SdkError::TimeoutError(_) => "TimeoutError",
                SdkError::DispatchFailure(_) => "DispatchFailure",
                SdkError::ResponseError(_) => "ResponseError",
                SdkError::ServiceError(_) => "ServiceError",
                _ => "SdkError",
            }
            .to_owned(),
            DisplayErrorContext(&e).to_string(),
        ),
    };
    AwsError {
        action: action.to_owned(),
        resource: resource.to_string(),
        code,
        message,
    }
}

/// AWS's error code of `e`, if it got an answer.
pub(super) fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.code()
}

/// What a service module does with a sent request's result.
pub(super) trait Sent<T, E, R>: Sized {
    /// The output, or an [`AwsError`] naming `action` and `resource`.
    fn or_fail(self, action: &str, resource: impl Display) -> AwsResult<T>;

    /// `None` when `absent` says the error means "no such resource".
    fn absent_if(
        self,
        absent: impl FnOnce(&SdkError<E, R>) -> bool,
    ) -> Result<Option<T>, SdkError<E, R>>;

    /// `None` when AWS answers with one of `codes`.
    fn absent_on(self, codes: &[&str]) -> Result<Option<T>, SdkError<E, R>>;
}

impl<T, E, R> Sent<T, E, R> for Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn or_fail(self, action: &str, resource: impl Display) -> AwsResult<T> {
        self.map_err(|e| fail(action, resource, e))
    }

    fn absent_if(
        self,
        absent: impl FnOnce(&SdkError<E, R>) -> bool,
    ) -> Result<Option<T>, SdkError<E, R>> {
        match self {
            Ok(out) => Ok(Some(out)),
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn absent_on(self, codes: &[&str]) -> Result<Option<T>, SdkError<E, R>> {
        self.absent_if(|e| code(e).is_some_and(|c| codes.contains(&c)))
    }
}

/// What a service module does with an SDK builder's result (a request
/// shape the SDK refused before sending).
pub(super) trait Built<T> {
    /// The value, or an [`AwsError`] with code `InvalidRequest`.
    fn or_invalid(self, action: &str, resource: &str) -> AwsResult<T>;
}

impl<T> Built<T> for Result<T, BuildError> {
    fn or_invalid(self, action: &str, resource: &str) -> AwsResult<T> {
        self.map_err(|e| AwsError::new(action, resource, "InvalidRequest", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aws_error_names_the_action_resource_and_code() {
        let e = AwsError {
            action: "creating security group".into(),
            resource: "causeway-x-relay".into(),
            code: "InvalidGroup.Duplicate".into(),
            message: "exists".into(),
        };
        assert_eq!(
            e.to_string(),
            "creating security group causeway-x-relay: AWS error InvalidGroup.Duplicate: exists"
        );
    }
}
