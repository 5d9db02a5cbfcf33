//! Hot swap and runtime configuration: the RPCs exist in the contract; the kernel
//! features behind them are not built yet, so they answer `UNIMPLEMENTED` with a reason.

use solo_kernel::Caller;
use solo_proto::v1 as pb;
use tonic::{Response, Status};

use crate::App;

pub(crate) const SWAP_NOT_YET: &str = "hot swap is not available in this build yet";
pub(crate) const CONFIG_NOT_YET: &str = "runtime configuration is not available in this build yet";

pub(crate) async fn hot_swap(
    _app: &App,
    _caller: &Caller,
    _req: pb::HotSwapRequest,
) -> Result<Response<pb::HotSwapResponse>, Status> {
    Err(Status::unimplemented(SWAP_NOT_YET))
}

pub(crate) async fn set_config(
    app: &App,
    caller: &Caller,
    _req: pb::SetConfigRequest,
) -> Result<Response<pb::SetConfigResponse>, Status> {
    let _ = app;
    if !caller.is_admin() {
        return Err(crate::ApiError::admin_only("changing the runtime configuration").into());
    }
    Err(Status::unimplemented(CONFIG_NOT_YET))
}
