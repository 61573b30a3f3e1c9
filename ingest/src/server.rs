//! The HTTP server under the routes: actix's HTTP/1 service on actix's server, put
//! together here rather than through `actix_web::HttpServer`, which gives no hold on
//! two things a receiver on the internet needs:
//!
//! - The answers the HTTP library gives itself without calling a handler (431 for a
//!   request head with too many headers, 400 for one it cannot parse, 500 for a broken
//!   chunked body) end the connection with an error; here that error is seen, and the
//!   answer counted and recorded like every other refusal.
//! - Each connection is read through a [`Guard`] that ends a request head taking longer
//!   than `INGEST_HEADER_TIMEOUT_MS` (without an answer, so the sender retries: the
//!   library's own timeout answers 408, which it would not) or larger than
//!   `INGEST_MAX_HEADER_BYTES` (431), so slow or bloated heads cannot hold connections.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::error::{DispatchError, ParseError};
use actix_http::{HttpService, KeepAlive};
use actix_rt::net::TcpStream;
use actix_service::{
    fn_factory, fn_service, map_config, IntoServiceFactory, Service, ServiceFactory,
    ServiceFactoryExt,
};
use actix_web::dev::AppConfig;
use actix_web::{web, App};

use crate::guard::{Guard, HeadLimits, Verdict, Watch};
use crate::rejections::Rejection;
use crate::routes::{self, State};

/// Serves the routes until `state.shutdown` is cancelled; from then on deliveries get 503
/// while requests in flight finish (up to 30 s).
pub async fn serve(state: State, listener: TcpListener) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let shutdown = state.shutdown.clone();
    let limits = HeadLimits {
        timeout: Duration::from_millis(state.http.header_timeout_ms),
        max_bytes: state.http.max_header_bytes,
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_worker = state.http.max_connections.div_ceil(workers);
    let state = web::Data::new(state);
    let builder = actix_server::Server::build();
    let draining = builder.graceful_shutdown_signal();
    let server = builder
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .disable_signals()
        .shutdown_timeout(30)
        .listen("ingest", listener, move || {
            let state = state.clone();
            let draining = draining.clone();
            let http = HttpService::build()
                .keep_alive(KeepAlive::Timeout(Duration::from_secs(5)))
                // The library's header timeout answers 408: off (the guard does it).
                .client_request_timeout(Duration::ZERO)
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                // Idle keep-alive connections close as soon as shutdown begins.
                .graceful_shutdown_signal(move || {
                    let draining = draining.clone();
                    async move { draining.notified().await }
                })
                .on_connect_ext(|io: &Guard<TcpStream>, data| {
                    data.insert(io.watch());
                })
                .h1(map_config(app(state.clone()), |_| AppConfig::default()));
            fn_factory(move || {
                let http = http.new_service(());
                let state = state.clone();
                async move {
                    let http = Rc::new(http.await.map_err(|_| ())?);
                    Ok::<_, ()>(fn_service(move |io: TcpStream| {
                        connection(http.clone(), io, state.clone(), limits)
                    }))
                }
            })
        })?
        .run();
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        // Let deliveries see the flag (503) before the listener closes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        handle.stop(true).await;
    });
    tracing::info!(%addr, "Ingest listening");
    server.await
}

/// The routes, with every answer counted and each request marked on its connection.
fn app(
    state: web::Data<State>,
) -> impl ServiceFactory<
    actix_http::Request,
    Config = AppConfig,
    Response = actix_web::dev::ServiceResponse,
    Error = actix_web::HttpResponse,
    InitError = (),
> {
    let metrics = state.metrics.clone();
    App::new()
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let metrics = metrics.clone();
            let watch = req.conn_data::<Arc<Watch>>().cloned();
            let response = srv.call(req);
            async move {
                let response = response.await?;
                metrics.request(response.status().as_u16(), started.elapsed());
                if let Some(watch) = watch {
                    watch.answered();
                }
                Ok(response)
            }
        })
        .configure(|cfg| routes::configure(cfg, state))
        .into_factory()
        .map_err(|e: actix_web::Error| e.error_response())
}

/// Serves one connection, then counts and records what the library or the guard ended
/// it with.
async fn connection<S>(
    http: Rc<S>,
    io: TcpStream,
    state: web::Data<State>,
    limits: HeadLimits,
) -> Result<(), ()>
where
    S: Service<(Guard<TcpStream>, Option<SocketAddr>), Response = (), Error = DispatchError>,
{
    let peer = io.peer_addr().ok();
    // Answers are small and sent whole: no reason to hold them back.
    let _ = io.set_nodelay(true);
    let guard = Guard::new(io, limits);
    let watch = guard.watch();
    let result = http.call((guard, peer)).await;
    let source = peer.map(|p| IpAddr::to_canonical(&p.ip()).to_string());
    let refusal = match (watch.verdict(), &result) {
        (Some(Verdict::HeadTooSlow), _) => {
            state.metrics.dropped("slow_headers");
            None
        }
        (Some(Verdict::HeadTooLarge), _) => Some((
            431,
            "header_too_large",
            "request head over INGEST_MAX_HEADER_BYTES".to_owned(),
        )),
        (None, Err(DispatchError::Parse(ParseError::TooLarge))) => {
            Some((431, "header_too_large", "request head too large".to_owned()))
        }
        (None, Err(DispatchError::Parse(ParseError::Io(_)) | DispatchError::Io(_))) => None,
        (None, Err(DispatchError::Parse(e))) => Some((400, "malformed_request", e.to_string())),
        (None, Err(DispatchError::InternalError)) => Some((
            500,
            "malformed_request",
            "request body framing broken".to_owned(),
        )),
        _ => None,
    };
    if let Some((status, reason, detail)) = refusal {
        state.metrics.answered(status);
        state.rejections.refuse(Rejection {
            reason,
            status,
            detail,
            tenant: "",
            event: "",
            source: source.unwrap_or_default(),
            body: b"",
        });
    }
    Ok(())
}
