//! The routes of `migrations` over [`crate::service::migrations`].

use axum::{Json, extract::State, http::StatusCode};
use common::domain::Capability;
use common::{
    domain::Version,
    store::migrations::{self, MigrationRow, RevisionRow},
};

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, ErrorDetail},
    paging::{Page, PageQuery},
    routes::{Access, Routes},
    service::{
        inventory::project,
        migrations::{
            CreateMigration, EditMigration, ImportBody, ImportRefusal, ImportRefused, ImportReport,
            create_migration, edit_migration, import_migrations,
        },
        snapshots::{VersionSchema, project_version_schema},
    },
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/projects/{slug}/migrations",
            Access::Needs(Capability::View),
            list,
        )
        .post(
            "/projects/{slug}/migrations",
            Access::Needs(Capability::Author),
            create,
        )
        .post_large(
            "/projects/{slug}/migrations/import",
            Access::Needs(Capability::Author),
            import,
            IMPORT_MAX_BYTES,
        )
        .patch(
            "/projects/{slug}/migrations/{version}",
            Access::Needs(Capability::Author),
            edit,
        )
        .get(
            "/projects/{slug}/migrations/{version}/revisions",
            Access::Needs(Capability::View),
            revisions,
        )
        .get(
            "/projects/{slug}/migrations/{version}",
            Access::Needs(Capability::View),
            get_one,
        )
        .get(
            "/projects/{slug}/migrations/{version}/schema",
            Access::Needs(Capability::View),
            schema,
        )
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/migrations/{version}/schema", tag = "migrations",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("version" = String, Path, description = "The migration's version"),
    ),
    responses(
        (status = 200, description = "The schema this version produces, per engine: the newest snapshot of one of the project's targets taken at that version (an empty list when there is none)", body = Vec<VersionSchema>),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn schema(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath((slug, version)): ApiPath<(String, String)>,
) -> Result<Json<Vec<VersionSchema>>, ApiError> {
    Ok(Json(
        project_version_schema(&state, &slug, version.trim()).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/projects/{slug}/migrations", tag = "migrations",
    params(("slug" = String, Path, description = "The project's slug")),
    request_body = CreateMigration,
    responses(
        (status = 201, description = "The migration", body = MigrationRow),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
        (status = 409, description = "`duplicate_version`; `out_of_order`: the version is lower than one applied on a target of the project and `allow_out_of_order` is not set", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the scripts together exceed `MH_MAX_SQL_BYTES`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `version`, `name`, `up_sql` or `down_sql`", body = ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    user: Authorized<rules::Author>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<CreateMigration>,
) -> Result<(StatusCode, Json<MigrationRow>), ApiError> {
    create_migration(&state, &user, slug, body)
        .await
        .map(|m| (StatusCode::CREATED, Json(m)))
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/migrations", tag = "migrations",
    params(("slug" = String, Path, description = "The project's slug"), PageQuery),
    responses(
        (status = 200, description = "A page of migrations in version order; the cursor is a version", body = Page<MigrationRow>),
        (status = 400, description = "`bad_request`: a cursor that is not a version", body = ErrorBody),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(slug): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<MigrationRow>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    let after = page
        .cursor
        .as_deref()
        .map(Version::parse)
        .transpose()
        .map_err(|_| ApiError::BadRequest("cursor is not a version".into()))?;
    let limit = page.limit();
    let rows = migrations::page(&state.db, project.id, after.as_ref(), limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |m| m.version.clone())))
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/migrations/{version}", tag = "migrations",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("version" = String, Path, description = "The migration's version"),
    ),
    responses(
        (status = 200, description = "The migration", body = MigrationRow),
        (status = 404, description = "`not_found`: no such project or migration", body = ErrorBody),
    ))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath((slug, version)): ApiPath<(String, String)>,
) -> Result<Json<MigrationRow>, ApiError> {
    let version = Version::parse(&version).map_err(|_| ApiError::NotFound("migration"))?;
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    let row = migrations::by_version(&mut conn, project.id, &version)
        .await?
        .ok_or(ApiError::NotFound("migration"))?;
    Ok(Json(row))
}

#[utoipa::path(patch, path = "/api/v1/projects/{slug}/migrations/{version}", tag = "migrations",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("version" = String, Path, description = "The migration's version"),
    ),
    request_body = EditMigration,
    responses(
        (status = 200, description = "The migration, with a new revision if anything changed; runs that pinned the old checksum are invalidated", body = MigrationRow),
        (status = 404, description = "`not_found`: no such project or migration", body = ErrorBody),
        (status = 409, description = "`migration_immutable`: applied somewhere; `migration_in_use`: a run is executing it", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the scripts together exceed `MH_MAX_SQL_BYTES`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `name`, `up_sql` or `down_sql`", body = ErrorBody),
    ))]
pub(crate) async fn edit(
    State(state): State<AppState>,
    user: Authorized<rules::Author>,
    ApiPath((slug, version)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<EditMigration>,
) -> Result<Json<MigrationRow>, ApiError> {
    edit_migration(&state, &user, &slug, &version, body)
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/migrations/{version}/revisions", tag = "migrations",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("version" = String, Path, description = "The migration's version"),
    ),
    responses(
        (status = 200, description = "Every revision of the migration, whole", body = Page<RevisionRow>),
        (status = 404, description = "`not_found`: no such project or migration", body = ErrorBody),
    ))]
pub(crate) async fn revisions(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath((slug, version)): ApiPath<(String, String)>,
) -> Result<Json<Page<RevisionRow>>, ApiError> {
    let version = Version::parse(&version).map_err(|_| ApiError::NotFound("migration"))?;
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    let migration = migrations::by_version(&mut conn, project.id, &version)
        .await?
        .ok_or(ApiError::NotFound("migration"))?;
    Ok(Json(Page::all(
        migrations::revisions(&mut conn, migration.id).await?,
    )))
}

#[utoipa::path(post, path = "/api/v1/projects/{slug}/migrations/import", tag = "migrations",
    params(("slug" = String, Path, description = "The project's slug")),
    request_body = ImportBody,
    responses(
        (status = 200, description = "Nothing new: every version exists with the same scripts", body = ImportReport),
        (status = 201, description = "Imported, all or nothing", body = ImportReport),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
        (status = 409, description = "`import_conflicts`: versions differ from the stored ones (body: the report); `out_of_order`: a new version is lower than one applied on a target of the project and `allow_out_of_order` is not set (body: the error); nothing was imported", body = ImportRefusal),
        (status = 413, description = "`payload_too_large`: over 64 MiB, or a migration over `MH_MAX_SQL_BYTES`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `files` (unknown layout, unreadable names, bad scripts)", body = ErrorBody),
    ))]
pub(crate) async fn import(
    State(state): State<AppState>,
    user: Authorized<rules::Author>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let files = body
        .files
        .into_iter()
        .map(|f| (f.path, f.content))
        .collect::<Vec<_>>();
    let report = import_migrations(
        &state,
        user.id,
        &user.actor(),
        user.ip.clone(),
        &slug,
        &files,
        body.allow_out_of_order,
    )
    .await?;
    if !report.conflicts.is_empty() {
        let message = format!(
            "{} version(s) differ from the stored migrations; nothing was imported",
            report.conflicts.len()
        );
        let body = ImportRefused {
            layout: report.layout,
            created: report.created,
            unchanged: report.unchanged,
            conflicts: report.conflicts,
            error: ErrorDetail {
                code: "import_conflicts".into(),
                message,
                field: None,
            },
        };
        return Ok((StatusCode::CONFLICT, Json(body)).into_response());
    }
    let status = if report.created.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(report)).into_response())
}

/// Largest import request: a whole folder of migrations.
pub const IMPORT_MAX_BYTES: usize = 64 * 1024 * 1024;
