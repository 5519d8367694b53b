//! Credentials and settings from the AWS CLI's shared files (`~/.aws/credentials`,
//! `~/.aws/config`), which `object_store` does not read itself.

use std::path::PathBuf;

use ini::Ini;

use crate::FilesError;

/// What a profile says; any field may be missing.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

fn home_file(env: &str, default: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(default))
}

fn read(path: &Option<PathBuf>) -> Result<Option<Ini>, FilesError> {
    let Some(path) = path else { return Ok(None) };
    if !path.exists() {
        return Ok(None);
    }
    Ini::load_from_file(path).map(Some).map_err(|e| {
        FilesError::bad_input(
            format!("cannot read the AWS file {}: {e}", path.display()),
            Some("fix the file, or point AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE elsewhere"),
        )
    })
}

/// Loads the named profile (`--profile`), else `AWS_PROFILE`, else `default`. An
/// explicitly named profile that exists in neither file is an error; a missing
/// `default` is not.
pub fn load(explicit: Option<&str>) -> Result<Option<Profile>, FilesError> {
    let from_env = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let named = explicit.map(str::to_string).or(from_env);
    let name = named.clone().unwrap_or_else(|| "default".into());
    let credentials = read(&home_file("AWS_SHARED_CREDENTIALS_FILE", "credentials"))?;
    let config = read(&home_file("AWS_CONFIG_FILE", "config"))?;

    let mut profile = Profile::default();
    let mut found = false;
    if let Some(section) = credentials
        .as_ref()
        .and_then(|c| c.section(Some(name.as_str())))
    {
        found = true;
        profile.access_key_id = section.get("aws_access_key_id").map(str::to_string);
        profile.secret_access_key = section.get("aws_secret_access_key").map(str::to_string);
        profile.session_token = section.get("aws_session_token").map(str::to_string);
    }
    // In the config file every profile but the default is written `[profile NAME]`.
    let config_section = if name == "default" {
        name.clone()
    } else {
        format!("profile {name}")
    };
    if let Some(section) = config
        .as_ref()
        .and_then(|c| c.section(Some(config_section.as_str())))
    {
        found = true;
        profile.region = section.get("region").map(str::to_string);
        profile.endpoint_url = section.get("endpoint_url").map(str::to_string);
        if profile.access_key_id.is_none() {
            profile.access_key_id = section.get("aws_access_key_id").map(str::to_string);
            profile.secret_access_key = section.get("aws_secret_access_key").map(str::to_string);
            profile.session_token = section.get("aws_session_token").map(str::to_string);
        }
    }
    match (found, named) {
        (true, _) => Ok(Some(profile)),
        (false, None) => Ok(None),
        (false, Some(name)) => Err(FilesError::bad_input(
            format!("the AWS profile {name:?} is in neither ~/.aws/credentials nor ~/.aws/config"),
            Some("check the name (aws configure list-profiles), or unset AWS_PROFILE"),
        )),
    }
}
