//! The route table: every route is registered with the access rule it
//! enforces, so the rule is visible in one place and the RBAC test can walk
//! every route of the router with every role.

use axum::{
    Router,
    handler::Handler,
    http::Method,
    routing::{self, MethodRouter},
};
use common::domain::Capability;

use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not (health, sign-in flow, static files).
    Public,
    /// Signed-in callers holding the capability (enforced by the handler's
    /// `Authorized<…>`/`Viewer<…>` argument).
    Needs(Capability),
}

#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub method: Method,
    pub path: String,
    pub access: Access,
}

/// A router that remembers what it routes.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<RouteInfo>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! method {
    ($name:ident, $method:expr) => {
        pub fn $name<H, T>(self, path: &str, access: Access, handler: H) -> Self
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            self.add($method, path, access, routing::$name(handler))
        }
    };
}

impl Routes {
    pub fn new() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    method!(get, Method::GET);
    method!(post, Method::POST);
    method!(patch, Method::PATCH);
    method!(delete, Method::DELETE);

    /// A POST route whose body may be larger than the app-wide limit
    /// (folders of migrations).
    pub fn post_large<H, T>(
        self,
        path: &str,
        access: Access,
        handler: H,
        max_body_bytes: usize,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let route =
            routing::post(handler).layer(axum::extract::DefaultBodyLimit::max(max_body_bytes));
        self.add(Method::POST, path, access, route)
    }

    fn add(
        mut self,
        method: Method,
        path: &str,
        access: Access,
        route: MethodRouter<AppState>,
    ) -> Self {
        // Routing the same path again merges methods into it.
        self.router = self.router.route(path, route);
        self.table.push(RouteInfo {
            method,
            path: path.to_owned(),
            access,
        });
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    pub fn nest(mut self, prefix: &str, other: Routes) -> Self {
        self.router = self.router.nest(prefix, other.router);
        self.table
            .extend(other.table.into_iter().map(|r| RouteInfo {
                path: format!("{prefix}{}", r.path),
                ..r
            }));
        self
    }

    /// Applies a layer to the routes registered so far.
    pub fn layer_router(mut self, f: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Self {
        self.router = f(self.router);
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteInfo>) {
        (self.router, self.table)
    }
}
