//! `mpc-wallet send`: a payment from the registered outputs, built, signed and reported.

use anyhow::Result;
use clap::Args;
use mpc_api::payments::TransactionRequest;
use mpc_types::WalletId;

use super::{output, print_sign_report, Conn};

#[derive(Args, Debug)]
pub struct SendArgs {
    #[arg(long)]
    pub wallet: WalletId,
    /// Recipient address (the wallet's network).
    #[arg(long)]
    pub to: String,
    /// Amount in satoshis.
    #[arg(long)]
    pub amount: u64,
    /// Fee rate in sat/vB.
    #[arg(long, default_value_t = 2.0)]
    pub fee_rate: f64,
}

/// `send --wallet W --to ADDR --amount SATS`
pub async fn send(conn: &Conn, args: &SendArgs) -> Result<()> {
    let api = conn.client()?;
    let report = api
        .send_payment(&TransactionRequest {
            wallet_id: args.wallet.clone(),
            recipient: args.to.clone(),
            amount_sats: args.amount,
            fee_rate_sat_vb: args.fee_rate,
        })
        .await?;
    output(conn, &report, print_sign_report)
}
