//! The Admin service (issue 19): retention plan and erasure
//! (`retention/rpc.rs`), legal holds (`holds/rpc.rs`), the maintenance
//! window (`maintenance/rpc.rs`) and retiring agents (`agents/rpc.rs`).
//! This file only routes; each call's checks (who may call it), its audit
//! entry and its work live with its concept. Investigators may create and
//! list holds and read maintenance status; everything else is for admins.

use std::sync::Arc;

use kiroku_proto::admin_server::Admin;
use kiroku_proto::{
    Hold, HoldCreateRequest, HoldListRequest, HoldListResponse, HoldReleaseRequest,
    MaintenanceReportsRequest, MaintenanceReportsResponse, MaintenanceRequest, MaintenanceStatus,
    PurgeRequest, PurgeResponse, RetentionPlan, RetentionPlanRequest, RetireAgentRequest,
    RetireAgentResponse,
};
use tonic::{Request, Response, Status};

use crate::alerts::Alerting;
use crate::holds::Holds;
use crate::retention::Retention;
use crate::store::Store;

/// What the Admin calls share. Fields are added by the concepts that need
/// them (the retention policy in force, the maintenance handle, the agents'
/// issuing CA).
pub struct AdminService {
    pub store: Arc<Store>,
    pub alerting: Arc<Alerting>,
    pub retention: Arc<Retention>,
    pub holds: Arc<Holds>,
    /// The maintenance window (`with_maintenance`).
    pub maintenance: Option<Arc<crate::maintenance::Maintenance>>,
    /// The agents' issuing CA, when configured (`[agents_ca]`).
    pub agents_ca: Option<Arc<crate::agents::AgentsCa>>,
}

impl AdminService {
    pub fn new(
        store: Arc<Store>,
        alerting: Arc<Alerting>,
        retention: Arc<Retention>,
        holds: Arc<Holds>,
    ) -> Self {
        AdminService {
            store,
            alerting,
            retention,
            holds,
            maintenance: None,
            agents_ca: None,
        }
    }

    pub fn with_maintenance(mut self, m: Arc<crate::maintenance::Maintenance>) -> Self {
        self.maintenance = Some(m);
        self
    }

    /// With the agents' issuing CA (retiring agents revokes through it).
    pub fn with_agents_ca(mut self, ca: Option<Arc<crate::agents::AgentsCa>>) -> Self {
        self.agents_ca = ca;
        self
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn retention_plan(
        &self,
        req: Request<RetentionPlanRequest>,
    ) -> Result<Response<RetentionPlan>, Status> {
        crate::retention::rpc::plan(self, req).await
    }

    async fn purge(&self, req: Request<PurgeRequest>) -> Result<Response<PurgeResponse>, Status> {
        crate::retention::rpc::purge(self, req).await
    }

    async fn hold_create(&self, req: Request<HoldCreateRequest>) -> Result<Response<Hold>, Status> {
        crate::holds::rpc::create(self, req).await
    }

    async fn hold_list(
        &self,
        req: Request<HoldListRequest>,
    ) -> Result<Response<HoldListResponse>, Status> {
        crate::holds::rpc::list(self, req).await
    }

    async fn hold_release(
        &self,
        req: Request<HoldReleaseRequest>,
    ) -> Result<Response<Hold>, Status> {
        crate::holds::rpc::release(self, req).await
    }

    async fn maintenance(
        &self,
        req: Request<MaintenanceRequest>,
    ) -> Result<Response<MaintenanceStatus>, Status> {
        crate::maintenance::rpc::maintenance(self, req).await
    }

    async fn maintenance_reports(
        &self,
        req: Request<MaintenanceReportsRequest>,
    ) -> Result<Response<MaintenanceReportsResponse>, Status> {
        crate::maintenance::rpc::reports(self, req).await
    }

    async fn retire_agent(
        &self,
        req: Request<RetireAgentRequest>,
    ) -> Result<Response<RetireAgentResponse>, Status> {
        crate::agents::rpc::retire(self, req).await
    }
}
