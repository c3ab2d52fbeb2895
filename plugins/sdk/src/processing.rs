//! Processing modules: the [`ProcessingModule`] trait and its export macro.

use crate::bindings::exports::bursar::plugin::processing as wit;
use crate::common::{Params, PluginError, PluginInfo};

/// The service a call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub plan_id: String,
    pub period: String,
    pub params: Params,
    pub addons: Params,
    pub account_email: String,
}

/// Everything a lifecycle call gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The plan's module settings over the instance's (secrets resolved).
    pub settings: Params,
    pub service: Service,
    /// The idempotency key of this call.
    pub operation_id: String,
}

impl From<wit::Context> for Context {
    fn from(c: wit::Context) -> Self {
        Context {
            settings: c.settings.into(),
            operation_id: c.operation_id,
            service: Service {
                id: c.service.id,
                plan_id: c.service.plan_id,
                period: c.service.period,
                params: c.service.params.into(),
                addons: c.service.addons.into(),
                account_email: c.service.account_email,
            },
        }
    }
}

/// The answer to a lifecycle call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done { params: Params, secret_params: Params },
    InProgress { remote_ref: String, poll_after_ms: u64, message: Option<String> },
}

impl Outcome {
    /// Finished, with params to store on the service.
    pub fn done(params: impl Into<Params>) -> Self {
        Outcome::Done { params: params.into(), secret_params: Params::default() }
    }

    /// Finished with nothing to store.
    pub fn nothing() -> Self {
        Outcome::done(Params::default())
    }

    /// Still working remotely: poll `remote_ref` after `poll_after_ms`.
    pub fn in_progress(remote_ref: impl Into<String>, poll_after_ms: u64, message: Option<String>) -> Self {
        Outcome::InProgress { remote_ref: remote_ref.into(), poll_after_ms, message }
    }
}

impl From<Outcome> for wit::Outcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Done { params, secret_params } => wit::Outcome::Done(wit::Done {
                params: params.into_inner(),
                secret_params: secret_params.into_inner(),
            }),
            Outcome::InProgress { remote_ref, poll_after_ms, message } => {
                wit::Outcome::InProgress(wit::Progress { remote_ref, poll_after_ms, message })
            }
        }
    }
}

pub use wit::CatalogItem;

fn unsupported<T>(what: &str) -> Result<T, PluginError> {
    Err(PluginError::unsupported(format!("this module does not implement `{what}`")))
}

/// A processing module. Only `info` and `open` are required; the rest
/// default to `unsupported` (list what you implement in `info().features`)
/// — except `prolong`, which defaults to done with nothing changed: paid
/// time was extended, and most modules have nothing to do about it.
pub trait ProcessingModule {
    fn info() -> PluginInfo;

    /// Reach the remote side with `settings` and say whether it answers
    /// (staff run it from `POST /api/v1/plugins/{name}/check`).
    fn check_connection(_settings: Params) -> Result<(), PluginError> {
        unsupported("check-connection")
    }

    fn catalog(_settings: Params) -> Result<Vec<CatalogItem>, PluginError> {
        unsupported("catalog")
    }

    fn open(ctx: Context) -> Result<Outcome, PluginError>;

    fn suspend(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported("suspend")
    }

    fn resume(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported("resume")
    }

    fn close(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported("close")
    }

    /// Paid time extended: most modules have nothing to do.
    fn prolong(_ctx: Context) -> Result<Outcome, PluginError> {
        Ok(Outcome::nothing())
    }

    fn change_plan(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported("change-plan")
    }

    fn reinstall(_ctx: Context) -> Result<Outcome, PluginError> {
        unsupported("reinstall")
    }

    fn poll(_ctx: Context, _remote_ref: String) -> Result<Outcome, PluginError> {
        unsupported("poll")
    }
}

/// Exports a [`ProcessingModule`] implementation as the plugin's
/// `bursar:plugin/processing` interface.
#[macro_export]
macro_rules! processing_module {
    ($module:ty) => {
        struct __BursarProcessingExport;

        impl $crate::bindings::exports::bursar::plugin::processing::Guest for __BursarProcessingExport {
            fn info() -> $crate::PluginInfo {
                <$module as $crate::ProcessingModule>::info()
            }
            fn check_connection(settings: ::std::vec::Vec<(String, String)>) -> Result<(), $crate::PluginError> {
                <$module as $crate::ProcessingModule>::check_connection(settings.into())
            }
            fn catalog(
                settings: ::std::vec::Vec<(String, String)>,
            ) -> Result<::std::vec::Vec<$crate::CatalogItem>, $crate::PluginError> {
                <$module as $crate::ProcessingModule>::catalog(settings.into())
            }
            fn open(ctx: $crate::bindings::exports::bursar::plugin::processing::Context)
                -> Result<$crate::bindings::exports::bursar::plugin::processing::Outcome, $crate::PluginError> {
                <$module as $crate::ProcessingModule>::open(ctx.into()).map(Into::into)
            }
            fn suspend(ctx: $crate::bindings::exports::bursar::plugin::processing::Context)
                -> Result<$crate::bindings::exports::bursar::plugin::processing::Outcome, $crate::PluginError> {
                <$module as $crate::ProcessingModule>::suspend(ctx.into()).map(Into::into)
            }
            fn resume(ctx: $crate::bindings::exports::bursar::plugin::processing::Context)
                -> Result<$crate::bindings::exports::bursar::plugin::processing::Outcome, $crate::PluginError> {
                <$module as $crate::ProcessingModule>::resume(ctx.into()).map(Into::into)
            }
            fn close(ctx: $crate::bindings::exports::bursar::plugin::processing::Context)
                -> Result<$crate::bindings::exports::bursar::plugin::processing::Outcome, $crate::PluginError> {
                <$module as $crate::ProcessingModule>::close(ctx.into()).map(Into::into)
            }
            fn prolong(ctx: $crate::bindings::exports::bursar::plugin::processing::Context)
                -> Result<$crate::bindings::exports::bursar::plugin::processing::Outcome, $crate::PluginError> {
                <$module as $crate::ProcessingModule>::prolong(ctx.into()).map(Into::into)
            }
            fn change_plan(ctx: $crate::bindings::exports::bursar::plugin::processing::Context)
                -> Result<$crate::bindings::exports::bursar::plugin::processing::Outcome, $crate::PluginError> {
                <$module as $crate::ProcessingModule>::change_plan(ctx.into()).map(Into::into)
            }
            fn reinstall(ctx: $crate::bindings::exports::bursar::plugin::processing::Context)
                -> Result<$crate::bindings::exports::bursar::plugin::processing::Outcome, $crate::PluginError> {
                <$module as $crate::ProcessingModule>::reinstall(ctx.into()).map(Into::into)
            }
            fn poll(
                ctx: $crate::bindings::exports::bursar::plugin::processing::Context,
                remote_ref: String,
            ) -> Result<$crate::bindings::exports::bursar::plugin::processing::Outcome, $crate::PluginError> {
                <$module as $crate::ProcessingModule>::poll(ctx.into(), remote_ref).map(Into::into)
            }
        }

        $crate::bindings::export_world!(__BursarProcessingExport);
    };
}
