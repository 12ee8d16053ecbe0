//! Maintenance (status, start, stop) and MaintenanceReports. Status and
//! reports are for investigators and admins (audited as queries); start
//! and stop for admins only (audited as administrative actions, refusals
//! too).

use std::path::Path;
use std::sync::Arc;

use kiroku_common::pki::Role;
use kiroku_proto::{
    DiskPart, MaintenanceReportsRequest, MaintenanceReportsResponse, MaintenanceRequest,
    MaintenanceStatus,
};
use tonic::{Request, Response, Status};

use super::Maintenance;
use crate::admin::AdminService;
use crate::auth;

const CALL_STATUS: &str = "MaintenanceStatus";
const CALL_REPORTS: &str = "MaintenanceReports";

fn handle(svc: &AdminService) -> Result<Arc<Maintenance>, Status> {
    svc.maintenance
        .clone()
        .ok_or_else(|| Status::unavailable("maintenance is not running in this collector"))
}

async fn audit_query(
    m: &Arc<Maintenance>,
    who: String,
    call: &'static str,
    detail: String,
) -> Result<(), Status> {
    let store = m.store().clone();
    tokio::task::spawn_blocking(move || store.audit_query(&who, call, &detail, 1))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| {
            Status::unavailable(format!(
                "the call cannot be recorded in the audit log ({e}); try again later"
            ))
        })
}

async fn audit_admin(
    m: &Arc<Maintenance>,
    who: String,
    call: &'static str,
    detail: String,
) -> Result<(), Status> {
    let store = m.store().clone();
    tokio::task::spawn_blocking(move || store.audit_admin(&who, call, &detail))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map(|_| ())
        .map_err(|e| {
            Status::unavailable(format!(
                "the action cannot be recorded in the audit log ({e}); nothing was done, try again later"
            ))
        })
}

pub async fn maintenance(
    svc: &AdminService,
    req: Request<MaintenanceRequest>,
) -> Result<Response<MaintenanceStatus>, Status> {
    let who = auth::caller(&req)?;
    let m = handle(svc)?;
    let action = req.into_inner().action;
    let action = if action.is_empty() {
        "status".to_string()
    } else {
        action
    };
    let message = match action.as_str() {
        "status" => {
            audit_query(&m, who.to_string(), CALL_STATUS, "status".into()).await?;
            String::new()
        }
        "start" | "stop" => {
            let call = if action == "start" {
                super::CALL_START
            } else {
                super::CALL_STOP
            };
            if who.role != Role::Admin {
                let why = format!("{who} may not {action} maintenance runs: admins only");
                audit_admin(&m, who.to_string(), call, format!("REFUSED: {why}")).await?;
                return Err(Status::permission_denied(why));
            }
            let m2 = m.clone();
            let by = who.to_string();
            let act = action.clone();
            let done = tokio::task::spawn_blocking(move || {
                if act == "start" {
                    let now = crate::clock::now_ms();
                    let window = m2.schedule().window_at(now);
                    m2.start_run("manual", window, &by).map(|id| {
                        format!("run {id} started (it resumes an unfinished run where it stopped)")
                    })
                } else {
                    m2.stop(&by)
                }
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
            let detail = match &done {
                Ok(msg) => msg.clone(),
                Err(why) => format!("REFUSED: {why}"),
            };
            audit_admin(&m, who.to_string(), call, detail).await?;
            done.map_err(Status::failed_precondition)?
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown action {other:?}: use status, start or stop"
            )));
        }
    };
    let m2 = m.clone();
    let mut status = tokio::task::spawn_blocking(move || status(&m2))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("{e:#}")))?;
    if !message.is_empty() {
        status.message = message;
    }
    Ok(Response::new(status))
}

pub async fn reports(
    svc: &AdminService,
    req: Request<MaintenanceReportsRequest>,
) -> Result<Response<MaintenanceReportsResponse>, Status> {
    let who = auth::caller(&req)?;
    let m = handle(svc)?;
    let limit = match req.into_inner().limit {
        0 => 20,
        n => n.min(super::state::KEEP_REPORTS as u32),
    } as usize;
    audit_query(&m, who.to_string(), CALL_REPORTS, format!("limit {limit}")).await?;
    let m2 = m.clone();
    let reports = tokio::task::spawn_blocking(move || m2.state().reports(limit))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("{e:#}")))?;
    Ok(Response::new(MaintenanceReportsResponse { reports }))
}

/// Bytes under `path` (a file or a directory tree); 0 when absent.
fn bytes_under(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| bytes_under(&e.path())).sum())
        .unwrap_or(0)
}

/// Disk use of each part of the data directory.
pub fn disk_parts(dir: &Path) -> Vec<DiskPart> {
    let part = |name: &str, paths: &[&str]| DiskPart {
        part: name.into(),
        bytes: paths.iter().map(|p| bytes_under(&dir.join(p))).sum(),
    };
    vec![
        part("journal", &["journal"]),
        part("index", &["index", "index.next"]),
        part("blobs", &["blobs"]),
        part("meta", &["meta"]),
        part("audit", &["audit.log", "audit.reserve"]),
        part("checkpoints", &["checkpoints"]),
    ]
}

/// The oldest event kept: the receipt time of the first event in the
/// journal (receipt order) among the first ones still there.
fn oldest_event_ms(m: &Maintenance) -> anyhow::Result<i64> {
    let j = &m.store().journal;
    let (events, _) = crate::store::journal::read_events(
        j.dir(),
        crate::store::journal::Position::default(),
        j.end(),
        1000,
    )?;
    Ok(events
        .iter()
        .map(|(e, _)| e.received_at_ms)
        .filter(|t| *t > 0)
        .min()
        .unwrap_or(0))
}

pub fn status(m: &Maintenance) -> anyhow::Result<MaintenanceStatus> {
    let now = crate::clock::now_ms();
    let (state, window) = m.run_state();
    let sched = m.schedule();
    let shown = match window.or_else(|| sched.window_at(now)) {
        Some(w) if state != "idle" || m.state().last_window()? != Some(w.day) => Some(w),
        _ => sched.next_after(now),
    };
    let protect = m.state().protect()?;
    let current = m.state().part()?;
    let last = m.state().reports(1)?.into_iter().next();
    let run = m.state().run()?;
    let mut message = match (&current, &run) {
        (Some(p), _) => format!(
            "run {} {state}: at leaf {} (window {} of the run), verified {} so far",
            p.run_id, p.to_leaf, p.windows, p.verified
        ),
        (None, Some(r)) => format!(
            "run {} unfinished: resumes at leaf {} of {} in the next window",
            r.run_id, r.next_leaf, r.end_leaf
        ),
        (None, None) => {
            "no run unfinished: the next run starts from the beginning of the store".into()
        }
    };
    if let Some(w) = shown {
        message.push_str(&format!(
            "; window {} to {} ({})",
            sched.show(w.start_ms),
            sched.show(w.end_ms),
            sched.zone_name()
        ));
    }
    let store = m.store();
    Ok(MaintenanceStatus {
        state: state.into(),
        next_start_ms: shown.map_or(0, |w| w.start_ms),
        planned_end_ms: shown.map_or(0, |w| w.end_ms),
        time_zone: sched.zone_name(),
        current,
        last,
        protect_pending: protect.is_some(),
        protect_reason: protect.unwrap_or_default(),
        disk: disk_parts(&store.dir),
        oldest_event_ms: oldest_event_ms(m)?,
        events: store.index.count(),
        marked: m.marks().count() as u64,
        holds: m.holds().in_force()?.len() as u64,
        message,
    })
}
