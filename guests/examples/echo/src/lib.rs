//! echo: replies with the request it was sent.

struct Echo;

impl solo_sdk::Service for Echo {
    fn handle_call(request: String) -> Result<String, String> {
        Ok(request)
    }
}

solo_sdk::service!(Echo);
