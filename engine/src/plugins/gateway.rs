//! Payment gateways as WASM components: the host side of
//! `bursar:plugin/gateway`. Every answer is validated before the engine
//! uses it; amounts and currencies above all.

use futures::future::BoxFuture;
use wasmtime::component::{Component, ComponentExportIndex};

use crate::payments::{
    CallbackRequest, CallbackResult, CreatedPayment, Gateway, PaymentEvent, PaymentRequest,
};
use crate::plugins::sandbox::{
    InstanceLimits, Sandbox, interface_index, prepare, typed, unanswered_info, wasm_error,
};
use crate::plugins::since_v0_1::gateway::PaymentGatewayPre;
use crate::plugins::since_v0_1::gateway::exports::bursar::plugin::gateway as wit;
/// An amount as plugins send and receive it.
use crate::plugins::since_v0_1::processing::bursar::plugin::types::Money as WitMoney;
use crate::plugins::since_v0_1::processing::bursar::plugin::types::{
    Money, PluginError, PluginInfo,
};
use crate::plugins::validate;
use crate::plugins::{HttpPolicy, LoadError, PluginHost, PluginState};
use crate::services::module::ModuleError;

/// Where each function of `bursar:plugin/gateway` is, looked up at load.
#[derive(Clone, Copy)]
struct Exports {
    info: ComponentExportIndex,
    check_connection: ComponentExportIndex,
    create_payment: ComponentExportIndex,
    handle_callback: ComponentExportIndex,
    query: ComponentExportIndex,
    refund: ComponentExportIndex,
}

impl Exports {
    fn find(component: &Component) -> Option<Exports> {
        let iface = interface_index(component, "gateway")?;
        let f = |name: &str| component.get_export_index(Some(&iface), name);
        Some(Exports {
            info: f("info")?,
            check_connection: f("check-connection")?,
            create_payment: f("create-payment")?,
            handle_callback: f("handle-callback")?,
            query: f("query")?,
            refund: f("refund")?,
        })
    }
}

type Settings = Vec<(String, String)>;

/// A loaded payment gateway instance.
pub struct GatewayPlugin {
    sandbox: Sandbox,
    pre: PaymentGatewayPre<PluginState>,
    exports: Exports,
    info: PluginInfo,
    settings: Settings,
}

impl GatewayPlugin {
    /// Its calls since the process started.
    pub fn stats(&self) -> crate::plugins::CallStats {
        self.sandbox.stats()
    }

    /// Compiles (or loads from cache), checks the exported interface and
    /// its version, type-checks it, and asks the plugin for its `info`.
    pub async fn load(
        host: &PluginHost,
        name: &str,
        bytes: &[u8],
        settings: Settings,
        policy: HttpPolicy,
        limits: InstanceLimits,
    ) -> Result<GatewayPlugin, LoadError> {
        let (component, instance_pre) = prepare(host, name, bytes, "gateway")?;
        let wasm_err = |source| wasm_error(name, source);
        let pre = PaymentGatewayPre::new(instance_pre).map_err(wasm_err)?;
        let exports = Exports::find(&component).ok_or_else(|| LoadError::Invalid {
            name: name.to_owned(),
            message: "`bursar:plugin/gateway` lacks a function".into(),
        })?;
        let sandbox = Sandbox::new(name, pre.instance_pre().clone(), policy, limits);
        let mut plugin = GatewayPlugin {
            sandbox,
            pre,
            exports,
            info: unanswered_info(),
            settings,
        };
        plugin.check_types().await.map_err(wasm_err)?;
        plugin.info = plugin.call_info().await.map_err(|e| LoadError::Invalid {
            name: name.to_owned(),
            message: format!("`info` failed: {e}"),
        })?;
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        self.sandbox.name()
    }

    /// Type-checks every export once, against the bindings and against
    /// the exact signatures the calls below use: calls then look up only
    /// the function they run, unchecked.
    async fn check_types(&self) -> wasmtime::Result<()> {
        let mut store = self.sandbox.store();
        self.pre.instantiate_async(&mut store).await?;
        let mut store = self.sandbox.store();
        let i = self
            .pre
            .instance_pre()
            .instantiate_async(&mut store)
            .await?;
        let (e, s) = (&self.exports, &mut store);
        i.get_typed_func::<(), (PluginInfo,)>(&mut *s, &e.info)?;
        i.get_typed_func::<(&[(String, String)],), (Result<(), PluginError>,)>(
            &mut *s,
            &e.check_connection,
        )?;
        i.get_typed_func::<(&wit::PaymentRequest,), (Result<wit::CreatedPayment, PluginError>,)>(
            &mut *s,
            &e.create_payment,
        )?;
        i.get_typed_func::<
            (&[(String, String)], &wit::HttpRequest),
            (Result<wit::CallbackResult, PluginError>,),
        >(&mut *s, &e.handle_callback)?;
        i.get_typed_func::<(&[(String, String)], &str), (Result<wit::PaymentEvent, PluginError>,)>(
            &mut *s, &e.query,
        )?;
        i.get_typed_func::<(&[(String, String)], &str, Money, &str), (Result<String, PluginError>,)>(
            &mut *s, &e.refund,
        )?;
        Ok(())
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    async fn run<R, F>(&self, call: F) -> Result<R, ModuleError>
    where
        F: for<'a> FnOnce(
            &'a wasmtime::component::Instance,
            &'a mut wasmtime::Store<PluginState>,
        ) -> BoxFuture<'a, wasmtime::Result<Result<R, PluginError>>>,
    {
        self.sandbox.run(call).await
    }

    pub async fn call_info(&self) -> Result<PluginInfo, ModuleError> {
        let index = self.exports.info;
        let info = self
            .run(move |i, s| {
                Box::pin(async move {
                    let f = typed::<(), (PluginInfo,)>(i, s, &index)?;
                    Ok(Ok(f.call_async(s, ()).await?.0))
                })
            })
            .await?;
        self.sandbox.counted(validate::info(info))
    }

    /// Runs `check-connection` with the instance's settings.
    pub async fn check_connection(&self) -> Result<(), ModuleError> {
        let settings = self.settings.clone();
        let index = self.exports.check_connection;
        self.run(move |i, s| {
            Box::pin(async move {
                let f = typed::<(&[(String, String)],), (Result<(), PluginError>,)>(i, s, &index)?;
                Ok(f.call_async(s, (&settings,)).await?.0)
            })
        })
        .await
    }

    /// Starts collecting a payment.
    pub async fn create_payment(
        &self,
        request: PaymentRequest,
    ) -> Result<CreatedPayment, ModuleError> {
        let request = wit::PaymentRequest {
            payment_id: request.payment_id,
            amount: WitMoney {
                amount: request.amount.minor(),
                currency: request.amount.currency().code().to_owned(),
            },
            description: request.description,
            account_email: request.account_email,
            return_url: request.return_url,
            settings: self.settings.clone(),
        };
        let index = self.exports.create_payment;
        let created = self
            .run(move |i, s| {
                Box::pin(async move {
                    let f = typed::<
                        (&wit::PaymentRequest,),
                        (Result<wit::CreatedPayment, PluginError>,),
                    >(i, s, &index)?;
                    Ok(f.call_async(s, (&request,)).await?.0)
                })
            })
            .await?;
        self.sandbox.counted(validate::gateway::created(created))
    }

    /// Hands a raw callback to the plugin: it verifies it and answers.
    pub async fn handle_callback(
        &self,
        request: CallbackRequest,
    ) -> Result<CallbackResult, ModuleError> {
        let request = wit::HttpRequest {
            method: request.method,
            uri: request.uri,
            headers: request.headers,
            body: request.body,
        };
        let settings = self.settings.clone();
        let index = self.exports.handle_callback;
        let result = self
            .run(move |i, s| {
                Box::pin(async move {
                    let f = typed::<
                        (&[(String, String)], &wit::HttpRequest),
                        (Result<wit::CallbackResult, PluginError>,),
                    >(i, s, &index)?;
                    Ok(f.call_async(s, (&settings, &request)).await?.0)
                })
            })
            .await?;
        self.sandbox.counted(validate::gateway::callback(result))
    }

    /// Reads a payment's status from the gateway.
    pub async fn query(&self, gateway_ref: &str) -> Result<PaymentEvent, ModuleError> {
        let settings = self.settings.clone();
        let gateway_ref = gateway_ref.to_owned();
        let index = self.exports.query;
        let event = self
            .run(move |i, s| {
                Box::pin(async move {
                    let f = typed::<
                        (&[(String, String)], &str),
                        (Result<wit::PaymentEvent, PluginError>,),
                    >(i, s, &index)?;
                    Ok(f.call_async(s, (&settings, &gateway_ref)).await?.0)
                })
            })
            .await?;
        self.sandbox.counted(validate::gateway::event(event))
    }

    /// Gives money back; returns the gateway's refund reference.
    pub async fn refund(
        &self,
        gateway_ref: &str,
        amount: crate::money::Money,
        refund_id: &str,
    ) -> Result<String, ModuleError> {
        let amount = Money {
            amount: amount.minor(),
            currency: amount.currency().code().to_owned(),
        };
        let settings = self.settings.clone();
        let (gateway_ref, refund_id) = (gateway_ref.to_owned(), refund_id.to_owned());
        let index = self.exports.refund;
        let reference = self
            .run(move |i, s| {
                Box::pin(async move {
                    let f = typed::<
                        (&[(String, String)], &str, Money, &str),
                        (Result<String, PluginError>,),
                    >(i, s, &index)?;
                    Ok(
                        f.call_async(s, (&settings, &gateway_ref, amount, &refund_id))
                            .await?
                            .0,
                    )
                })
            })
            .await?;
        self.sandbox
            .counted(validate::gateway::refund_ref(reference))
    }
}

impl Gateway for GatewayPlugin {
    fn create_payment(
        &self,
        request: PaymentRequest,
    ) -> BoxFuture<'_, Result<CreatedPayment, ModuleError>> {
        Box::pin(GatewayPlugin::create_payment(self, request))
    }

    fn handle_callback(
        &self,
        request: CallbackRequest,
    ) -> BoxFuture<'_, Result<CallbackResult, ModuleError>> {
        Box::pin(GatewayPlugin::handle_callback(self, request))
    }

    fn query<'a>(
        &'a self,
        gateway_ref: &'a str,
    ) -> BoxFuture<'a, Result<PaymentEvent, ModuleError>> {
        Box::pin(GatewayPlugin::query(self, gateway_ref))
    }

    fn refund<'a>(
        &'a self,
        gateway_ref: &'a str,
        amount: crate::money::Money,
        refund_id: &'a str,
    ) -> BoxFuture<'a, Result<String, ModuleError>> {
        Box::pin(GatewayPlugin::refund(self, gateway_ref, amount, refund_id))
    }
}
