//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::problem::Problem;
use super::{abuse, account, admin, domains, history, keys, links, qr, stats, users, webhooks};
use crate::model::Role;
use crate::model::Strategy;

pub(super) async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

struct DocFixes;

impl utoipa::Modify for DocFixes {
    /// Declares the bearer scheme, serves every problem document as
    /// `application/problem+json`, and gives every operation a `default`
    /// response: any status not listed (400 for a body that is not JSON, 401,
    /// 413, 429, 503 when the store is unavailable) is a problem document.
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = response.content.get("application/json").is_some_and(|c| {
                        matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"))
                    });
                    if is_problem {
                        response.content.shift_remove("application/json");
                        response
                            .content
                            .insert("application/problem+json".to_owned(), problem());
                    }
                }
                operation.responses.responses.insert(
                    "default".to_owned(),
                    RefOr::T(
                        ResponseBuilder::new()
                            .description("an error, as an RFC 9457 problem document")
                            .content("application/problem+json", problem())
                            .build(),
                    ),
                );
            }
        }
    }
}

/// The OpenAPI document, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(title = "Shortline admin API", description = "Create and manage short links."),
    paths(links::create_link, links::create_batch, links::list_links, links::get_link, links::patch_link, links::delete_link,
        stats::link_stats, stats::top_links, qr::link_qr, history::link_history,
        domains::create_domain, domains::list_domains, domains::get_domain, domains::patch_domain, domains::delete_domain,
        abuse::list_blocklist, abuse::get_block, abuse::put_block, abuse::delete_block,
        abuse::report_link, abuse::list_reports, abuse::resolve_report,
        keys::create_key, keys::list_keys, keys::delete_key,
        account::login, account::logout, account::whoami, account::list_sessions, account::end_session, account::change_password, account::redeem,
        users::create_user, users::list_users, users::get_user, users::patch_user, users::delete_user, users::reset_user, users::end_user_sessions,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::get_webhook, webhooks::patch_webhook, webhooks::delete_webhook, webhooks::webhook_deliveries,
        admin::backup, admin::index, admin::healthz, admin::readyz),
    components(schemas(admin::Index, links::LinkOut, links::CreateLink, links::CreateBatch, links::BatchItem, links::BatchOut, links::PatchLink, links::LinkPage, keys::CreateKey, keys::KeyOut, domains::DomainOut, domains::CertificateOut, domains::CreateDomain, domains::PatchDomain, domains::DomainList, Problem, Strategy, Role,
        crate::analytics::stats::Stats, crate::analytics::stats::Point, crate::analytics::stats::Count,
        stats::TopLinks, stats::TopLink, history::History, history::Change,
        super::routing::RuleBody, super::routing::QueryBody, super::routing::VariantBody,
        crate::domain::blocklist::BlockEntry, abuse::BlocklistPage, abuse::PutBlock, abuse::BlockOut, abuse::BlockView, abuse::SweepOut, abuse::SweepState,
        crate::domain::reports::Report, crate::domain::reports::ReportState, crate::domain::reports::Category, crate::domain::reports::Action,
        abuse::NewReport, abuse::ReportReceipt, abuse::ReportPage, abuse::Resolve, abuse::ResolvedOut,
        account::Login, account::Whoami, account::SessionOut, account::ChangePassword, account::Redeem,
        users::UserRole, users::UserOut, users::CreateUser, users::OneTimeToken, users::CreatedUser, users::PatchUser, crate::model::TokenKind,
        webhooks::CreateWebhook, webhooks::PatchWebhook, webhooks::WebhookOut, webhooks::AttemptOut, webhooks::Deliveries, crate::model::EventKind)),
    modifiers(&DocFixes)
)]
#[derive(Debug)]
pub struct ApiDoc;
