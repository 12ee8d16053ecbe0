//! Maintenance (status, start, stop) and MaintenanceReports.

use kiroku_proto::{
    MaintenanceReportsRequest, MaintenanceReportsResponse, MaintenanceRequest, MaintenanceStatus,
};
use tonic::{Request, Response, Status};

use crate::admin::AdminService;

pub async fn maintenance(
    _svc: &AdminService,
    _req: Request<MaintenanceRequest>,
) -> Result<Response<MaintenanceStatus>, Status> {
    Err(Status::unimplemented("Maintenance is not built yet"))
}

pub async fn reports(
    _svc: &AdminService,
    _req: Request<MaintenanceReportsRequest>,
) -> Result<Response<MaintenanceReportsResponse>, Status> {
    Err(Status::unimplemented("MaintenanceReports is not built yet"))
}
