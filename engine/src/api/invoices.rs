//! `/api/v1/invoices` (documents) and `/api/v1/tax-rules`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::error::Problem;
use crate::api::extract::{ApiJson, ApiQuery, Principal};
use crate::api::views::*;
use crate::api::{AccountListQuery, AppState, PageBody};
use crate::catalog::ProductType;
use crate::invoices::Invoice;
use crate::store::{accounts as accounts_repo, invoices as repo};

#[utoipa::path(get, path = "/api/v1/invoices", operation_id = "listInvoices", tag = "invoices",
    params(AccountListQuery),
    responses((status = 200, body = PageBody<InvoiceView>)),
    security(("bearer" = [])))]
/// Invoices, receipts and credit notes, oldest first: all for staff, the
/// customer's own for a customer key.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AccountListQuery>,
) -> Result<Json<PageBody<InvoiceView>>, Problem> {
    let (account, after, limit) = q.resolve(&state, &principal)?;
    let mut r = state.store.reader().await?;
    let page = repo::list(r.conn(), account.as_deref(), after.as_deref(), limit).await?;
    Ok(Json(page.into()))
}

pub(crate) async fn load(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Invoice, Problem> {
    let invoice = {
        let mut r = state.store.reader().await?;
        repo::get(r.conn(), id).await?
    };
    principal
        .require_account(&invoice.account_id)
        .map_err(|_| Problem::not_found(format!("invoice {id} not found")))?;
    Ok(invoice)
}

#[utoipa::path(get, path = "/api/v1/invoices/{id}", operation_id = "getInvoice", tag = "invoices",
    params(("id" = String, Path)),
    responses((status = 200, description = "the document; as PDF when the request accepts `application/pdf`",
        content((InvoiceView = "application/json"), (Vec<u8> = "application/pdf"))), (status = 404)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let invoice = load(&state, &principal, &id).await?;
    if wants_pdf(&headers) {
        return pdf_response(&state, invoice).await;
    }
    Ok(([(header::VARY, "Accept")], Json(InvoiceView::from(invoice))).into_response())
}

/// Whether the request prefers a PDF to JSON (`Accept: application/pdf`
/// without JSON before it).
fn wants_pdf(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    for media in accept.split(',') {
        let media = media.split(';').next().unwrap_or_default().trim();
        match media.to_ascii_lowercase().as_str() {
            "application/pdf" => return true,
            "application/json" | "application/*" | "*/*" => return false,
            _ => {}
        }
    }
    false
}

/// The document's HTML (the invoice template) with its customer.
pub(crate) async fn render(state: &AppState, invoice: &Invoice) -> Result<String, Problem> {
    let account = {
        let mut r = state.store.reader().await?;
        accounts_repo::get(r.conn(), &invoice.account_id).await?
    };
    let zone = account.time_zone.unwrap_or(state.billing.time_zone);
    let ctx = crate::templates::invoice_context(invoice, &account, &state.company, zone);
    state
        .templates
        .invoice_html(&account.language, &ctx)
        .map_err(|e| {
            tracing::error!(invoice = %invoice.id, error = %e, "invoice template failed");
            Problem::internal()
        })
}

async fn pdf_response(state: &AppState, invoice: Invoice) -> Result<Response, Problem> {
    let html = render(state, &invoice).await?;
    let pdf = crate::templates::pdf::render(html).await.map_err(|e| {
        tracing::error!(invoice = %invoice.id, error = %e, "invoice PDF failed");
        Problem::internal()
    })?;
    let disposition = format!("inline; filename=\"{}.pdf\"", invoice.number);
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::VARY, "Accept".to_owned()),
        ],
        pdf,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/invoices/{id}/html", operation_id = "getInvoiceHtml", tag = "invoices",
    params(("id" = String, Path)),
    responses((status = 200, content_type = "text/html", description = "printable"), (status = 404)),
    security(("bearer" = [])))]
/// The document as a printable HTML page (the invoice template; the PDF
/// is laid out from the same page).
pub async fn html(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let invoice = load(&state, &principal, &id).await?;
    let page = render(&state, &invoice).await?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

#[utoipa::path(get, path = "/api/v1/invoices/{id}/pdf", operation_id = "getInvoicePdf", tag = "invoices",
    params(("id" = String, Path)),
    responses((status = 200, content_type = "application/pdf", body = Vec<u8>, description = "the document as an A4 PDF"), (status = 404)),
    security(("bearer" = [])))]
/// The document as a PDF, laid out from its HTML page.
pub async fn pdf(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let invoice = load(&state, &principal, &id).await?;
    pdf_response(&state, invoice).await
}

/// A tax rule for a country, and optionally one product type.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaxRule {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Only this product type (default: every type without its own rule).
    pub product_type: Option<ProductType>,
    pub name: String,
    /// Basis points, 1 to 10000 (1900 = 19 %).
    pub rate_bp: i64,
    /// Prices include the tax (true) or it is added on top (false).
    pub inclusive: bool,
}

#[utoipa::path(post, path = "/api/v1/tax-rules", operation_id = "createTaxRule", tag = "invoices",
    request_body = CreateTaxRule,
    responses((status = 201, body = TaxRuleView), (status = 409), (status = 422)),
    security(("bearer" = [])))]
/// Adds a tax rule (staff). It applies to charges from now on.
pub async fn create_rule(
    State(state): State<AppState>,
    body: ApiJson<CreateTaxRule>,
) -> Result<Response, Problem> {
    let rule = add_rule(&state, body.value).await?;
    Ok((StatusCode::CREATED, Json(rule)).into_response())
}

/// Checks and stores a tax rule (the API's and the staff console's).
pub(crate) async fn add_rule(
    state: &AppState,
    req: CreateTaxRule,
) -> Result<crate::invoices::TaxRule, Problem> {
    let country = crate::accounts::valid_country(&req.country).ok_or_else(|| {
        Problem::invalid(
            "country",
            format!(
                "`{}` is not an ISO 3166-1 alpha-2 country code",
                req.country
            ),
        )
    })?;
    if !(1..=10_000).contains(&req.rate_bp) {
        return Err(Problem::invalid(
            "rate_bp",
            "must be 1 to 10000 basis points",
        ));
    }
    let name = crate::accounts::check_text("name", &req.name, 100)?;
    let mut tx = state.store.begin().await?;
    let rule = repo::create_rule(
        tx.conn(),
        repo::NewRule {
            country: &country,
            product_type: req.product_type.map(|p| p.as_str()),
            name: &name,
            rate_bp: req.rate_bp,
            inclusive: req.inclusive,
        },
        state.clock.now(),
    )
    .await?;
    tx.commit().await?;
    Ok(rule)
}

#[utoipa::path(get, path = "/api/v1/tax-rules", operation_id = "listTaxRules", tag = "invoices",
    responses((status = 200, body = PageBody<TaxRuleView>)),
    security(("bearer" = [])))]
pub async fn rules(State(state): State<AppState>) -> Result<Json<PageBody<TaxRuleView>>, Problem> {
    let mut r = state.store.reader().await?;
    Ok(Json(PageBody::all(repo::rules(r.conn()).await?)))
}
