<#
.SYNOPSIS
    Installs, updates or removes the Kiroku agent on a Windows PC without
    the MSI (README "Deploying on Windows PCs").

.DESCRIPTION
    The same steps as the MSI, through the agent's own commands:
      1. stops the running service (an update),
      2. copies kiroku-agent.exe to -InstallDir (default Program Files\Kiroku),
      3. `kiroku-agent service install`: registers the KirokuAgent service
         (automatic, LocalSystem, restart on failure) and creates
         %ProgramData%\Kiroku limited to SYSTEM and Administrators,
      4. `kiroku-agent config write`: the parameters into
         %ProgramData%\Kiroku\agent.toml (created on the first install;
         later runs change only the parameters given),
      5. `kiroku-agent service start` (unless -NoStart).
    -Uninstall stops and deletes the service and removes the program
    folder; %ProgramData%\Kiroku (configuration, certificates, buffer, logs)
    is kept, as by the MSI.

    Parameters are the MSI properties in PowerShell spelling: COLLECTOR is
    -Collector, CA_FILE is -CaFile, SMTP_UPSTREAM is -SmtpUpstream, ...
    Use either this script or the MSI on a PC, not both.

.EXAMPLE
    .\install.ps1 -Collector https://kiroku.example.co.jp:7443 `
        -CaFile C:\Setup\ca.pem -EnrollEndpoint https://kiroku.example.co.jp:7444 `
        -EnrollToken (Get-Content C:\Setup\token.txt) `
        -SmtpUpstream smtp.example.co.jp:587 -SmtpListen 127.0.0.1:2525

.EXAMPLE
    .\install.ps1 -Uninstall
#>
#Requires -RunAsAdministrator
[CmdletBinding()]
param(
    # The kiroku-agent.exe to install (default: next to this script).
    [string]$Exe = (Join-Path $PSScriptRoot 'kiroku-agent.exe'),
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'Kiroku'),
    [string]$Collector,
    [string]$ServerName,
    [string]$CaFile,
    [string]$CertFile,
    [string]$KeyFile,
    [string]$EnrollToken,
    [string]$EnrollEndpoint,
    [string]$SmtpListen,
    [string]$SmtpMode,
    [string]$SmtpUpstream,
    [string]$SmtpUpstreamTls,
    [string]$FilesWatch,
    [string]$DataDir,
    [switch]$NoStart,
    [switch]$Uninstall
)

$ErrorActionPreference = 'Stop'
$ServiceName = 'KirokuAgent'
$Config = Join-Path $env:ProgramData 'Kiroku\agent.toml'
$Target = Join-Path $InstallDir 'kiroku-agent.exe'

# Runs the installed agent; stops the script on a non-zero exit. Only the
# verb is named in the error: the arguments may hold the enrollment token.
function Invoke-Agent([string[]]$Arguments) {
    & $Target @Arguments
    if ($LASTEXITCODE -ne 0) {
        throw "kiroku-agent $($Arguments[0]) $($Arguments[1]) failed (exit code $LASTEXITCODE); see the lines above"
    }
}

$service = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue

if ($Uninstall) {
    if (Test-Path $Target) {
        Invoke-Agent @('service', 'uninstall')
    } elseif ($service) {
        Stop-Service -Name $ServiceName -Force
        & sc.exe delete $ServiceName | Out-Null
    }
    if (Test-Path $InstallDir) { Remove-Item -Recurse -Force $InstallDir }
    Write-Host "Kiroku agent removed; $(Split-Path $Config) is kept (delete it by hand to drop the buffer)."
    return
}

if (-not (Test-Path $Exe)) { throw "$Exe does not exist: give -Exe <path to kiroku-agent.exe>" }

# 1. An update: stop the running agent so its exe can be replaced (it
#    stops gracefully; the buffer is kept).
if ($service -and $service.Status -ne 'Stopped') {
    Stop-Service -Name $ServiceName -Force
    $service.WaitForStatus('Stopped', [TimeSpan]::FromSeconds(60))
}

# 2. The program.
New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
if ((Resolve-Path $Exe).Path -ne $Target) { Copy-Item -Force $Exe $Target }

# 3. The service and the protected ProgramData folder.
Invoke-Agent @('service', 'install', '--config', $Config)

# 4. The configuration: only the parameters given (an empty one is "not
#    given", as for the MSI's properties).
$settings = [ordered]@{
    '--collector' = $Collector; '--server-name' = $ServerName
    '--ca-file' = $CaFile; '--cert-file' = $CertFile; '--key-file' = $KeyFile
    '--enroll-token' = $EnrollToken; '--enroll-endpoint' = $EnrollEndpoint
    '--smtp-listen' = $SmtpListen; '--smtp-mode' = $SmtpMode
    '--smtp-upstream' = $SmtpUpstream; '--smtp-upstream-tls' = $SmtpUpstreamTls
    '--files-watch' = $FilesWatch; '--data-dir' = $DataDir
}
$write = @('config', 'write', '--config', $Config)
foreach ($flag in $settings.Keys) {
    if ($settings[$flag]) { $write += @($flag, $settings[$flag]) }
}
Invoke-Agent $write

# 5. Start.
if (-not $NoStart) {
    Invoke-Agent @('service', 'start')
}
Write-Host "Kiroku agent installed in $InstallDir; configuration $Config; logs $(Join-Path (Split-Path $Config) 'logs')."
