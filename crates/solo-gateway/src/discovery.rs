//! Service discovery (`RegisterService`, `DiscoverService`, `GetServices`): the RPCs are
//! part of the reference contract; the registry behind them is not built yet, so they
//! answer `UNIMPLEMENTED` with a reason rather than pretend.

use solo_kernel::Caller;
use solo_proto::v1 as pb;
use tonic::{Response, Status};

use crate::App;

pub(crate) const NOT_YET: &str = "service discovery is not available in this build yet";

pub(crate) async fn register(
    _app: &App,
    _caller: &Caller,
    _req: pb::RegisterServiceRequest,
) -> Result<Response<pb::RegisterServiceResponse>, Status> {
    Err(Status::unimplemented(NOT_YET))
}

pub(crate) fn discover(
    _app: &App,
    _caller: &Caller,
    _req: pb::DiscoverServiceRequest,
) -> Result<Response<pb::DiscoverServiceResponse>, Status> {
    Err(Status::unimplemented(NOT_YET))
}

pub(crate) fn get_services(
    _app: &App,
    _caller: &Caller,
    _req: pb::GetServicesRequest,
) -> Result<Response<pb::GetServicesResponse>, Status> {
    Err(Status::unimplemented(NOT_YET))
}
